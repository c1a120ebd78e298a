// Causal multi-head self-attention with grouped-query heads (GQA, Ainslie et al., arXiv
// 2305.13245), rotary position embeddings (RoPE, Su et al., arXiv 2104.09864, Eq. 34) and a
// KV cache, in the layouts of the models Concord loads:
//
//   q, k, v = x W_qkv (+ b_qkv)   one fused projection, [H*D | H_kv*D | H_kv*D] output columns
//   q, k    = RoPE(q, k)          transformers' "rotate_half" layout: the two halves of a head
//                                 are the (real, imaginary) parts, frequencies theta^(-2i/D)
//   o       = softmax(q k^T / sqrt(D) + mask) v,   each kv head shared by H/H_kv query heads
//   y       = o W_o (+ b_o)
//
// The mask is causal over cache positions, drops padding keys, and optionally keeps only the
// last `sliding_window` keys (Mistral). The layers call the fused flash-style ops::attention
// (concord/ops/attention.h) for plain causal batches, and for padded or packed ones through its
// segment ids when a fused kernel serves the device and dtype (AttentionContext says which). A
// sliding window within reach, or padding without a fused kernel, goes through attention_core(),
// which materialises the [T, S] scores in plain ATen.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

#include "concord/nn/kv_cache.h"

namespace concord::nn {

/// Rotary tables for `positions` ([B, T] int64): cos and sin, [B, T, head_dim] in `dtype`,
/// each half repeated (cat(freqs, freqs)) as transformers builds them; angles in fp32.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t head_dim,
                                              double theta, at::ScalarType dtype);

/// x: [B, H, T, D]; cos/sin: [B, T, D]. x * cos + rotate_half(x) * sin.
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

/// Which keys each query may see: [B, 1, T, past + T] bool. Query t sits at cache position
/// past + t and sees key s when s <= past + t, the key is not padding (`key_mask`, [B, past + T]
/// 0/1, undefined: none is) and, with sliding_window > 0, past + t - s < sliding_window.
at::Tensor causal_attention_mask(const at::Tensor& key_mask, int64_t batch, int64_t past,
                                 int64_t steps, int64_t sliding_window, c10::Device device);

/// softmax(q k^T * scale, masked) v with q [B, H, T, D], k and v [B, H_kv, S, D] (H a multiple
/// of H_kv), mask [B, 1, T, S] bool (true: may attend). Fully masked rows (queries at padding)
/// get uniform weights instead of NaN. Returns [B, H, T, D]. The path for masks ops::attention
/// does not take (see above).
at::Tensor attention_core(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask, double scale);

/// What every layer of one forward pass shares (computed once per pass by the model).
struct AttentionContext {
  at::Tensor cos, sin;  ///< [B, T, D] rotary tables; undefined when the model has no RoPE
  at::Tensor mask;      ///< [B, 1, T, S] bool (causal_attention_mask); undefined on fused paths
  /// True when the mask would be plain causal (no padding, no sliding window in reach): the
  /// layers then call the fused flash-style ops::attention instead of materialising [T, S] scores.
  bool plain_causal = false;
  /// [B, S] int64 segment ids for the fused op's segment rule (ops/attention.h): the 0/1
  /// attention mask of a padded batch (padding keys are never read by real queries) or the ids
  /// of packed rows. When defined, the layers call ops::attention with it instead of `mask`.
  at::Tensor segment_ids;
};

struct CausalSelfAttentionOptions {
  CausalSelfAttentionOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  /// d: model width.
  TORCH_ARG(int64_t, dim);
  /// H: query heads.
  TORCH_ARG(int64_t, heads);
  /// H_kv: key/value heads (0: H, plain multi-head attention).
  TORCH_ARG(int64_t, kv_heads) = 0;
  /// D: per-head width (0: d / H).
  TORCH_ARG(int64_t, head_dim) = 0;
  /// Biases on the q, k, v projections (GPT-2, Qwen2).
  TORCH_ARG(bool, qkv_bias) = false;
  /// Bias on the output projection (GPT-2).
  TORCH_ARG(bool, out_bias) = false;
  /// Rotary embeddings applied to q and k (the tables come in AttentionContext).
  TORCH_ARG(bool, rope) = true;
};

class CausalSelfAttentionImpl : public torch::nn::Cloneable<CausalSelfAttentionImpl> {
 public:
  explicit CausalSelfAttentionImpl(CausalSelfAttentionOptions options);
  void reset() override;
  /// x: [B, T, d] -> [B, T, d]. With a cache, this layer's keys and values are appended to
  /// `cache` at `layer` and attention covers every cached token.
  at::Tensor forward(const at::Tensor& x, const AttentionContext& ctx, KVCache* cache = nullptr,
                     int64_t layer = 0);
  int64_t kv_heads() const;
  int64_t head_dim() const;
  void pretty_print(std::ostream& stream) const override;

  CausalSelfAttentionOptions options;
  torch::nn::Linear qkv{nullptr};  ///< d -> (H + 2 H_kv) D
  torch::nn::Linear out{nullptr};  ///< H D -> d
};
TORCH_MODULE(CausalSelfAttention);

}  // namespace concord::nn
