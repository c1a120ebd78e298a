// KVCache: the per-layer keys and values of the tokens a causal model has already seen, so each
// decoding step runs the new tokens only. Layout per layer: [B, H_kv, capacity, D] buffers of
// which the first length() positions are filled (keys are stored after RoPE). Buffers grow
// geometrically, or once if reserve() is called with the final length, so appending a token
// copies only that token. A layer may also keep a small recurrent state (the last k-1 inputs of
// a causal neighbour convolution, see concord/nn/siaf.h).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace concord::nn {

class KVCache {
 public:
  explicit KVCache(int64_t num_layers = 0) : layers_(static_cast<size_t>(num_layers)) {}

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  /// Tokens cached (the same in every layer once a forward pass has completed).
  int64_t length() const { return length_; }
  /// Sizes the buffers for `capacity` tokens at the next append (avoids regrowth).
  void reserve(int64_t capacity) { reserve_ = capacity; }

  /// Appends this step's keys and values ([B, H_kv, T, D]) to `layer` at position length();
  /// returns views of all keys and values so far, [B, H_kv, length() + T, D].
  std::pair<at::Tensor, at::Tensor> append(int64_t layer, const at::Tensor& k, const at::Tensor& v);

  /// Per-layer recurrent state (undefined until a module writes it).
  at::Tensor& state(int64_t layer);

  /// Marks `steps` more tokens as cached; the model calls this after every layer appended.
  void advance(int64_t steps) { length_ += steps; }

  /// Keeps only the batch rows `index` (a 1-D int64 tensor), e.g. to drop finished sequences.
  void select_rows(const at::Tensor& index);

  /// Drops everything.
  void clear();

 private:
  struct Layer {
    at::Tensor k, v;  // [B, H_kv, capacity, D]
    at::Tensor state;
  };
  std::vector<Layer> layers_;
  int64_t length_ = 0;
  int64_t reserve_ = 0;
};

}  // namespace concord::nn
