// A lookup table of token (or position) vectors, y[...] = W[ids[...]]: torch::nn::Embedding's
// parameter, name and initialisation (W ~ N(0, 1), the same random draws), left uninitialised
// under a SkipInitGuard (concord/nn/init.h) so that loading a checkpoint never fills a
// [vocab, d] table only to replace it.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace concord::nn {

struct EmbeddingOptions {
  EmbeddingOptions(int64_t num_embeddings, int64_t embedding_dim)
      : num_embeddings_(num_embeddings), embedding_dim_(embedding_dim) {}
  /// Rows of the table (the vocabulary, or the longest sequence for learned positions).
  TORCH_ARG(int64_t, num_embeddings);
  /// Width of each row.
  TORCH_ARG(int64_t, embedding_dim);
};

class EmbeddingImpl : public torch::nn::Cloneable<EmbeddingImpl> {
 public:
  EmbeddingImpl(int64_t num_embeddings, int64_t embedding_dim)
      : EmbeddingImpl(EmbeddingOptions(num_embeddings, embedding_dim)) {}
  explicit EmbeddingImpl(EmbeddingOptions options);
  void reset() override;
  /// Redraws the table from N(0, 1) as torch::nn::Embedding does.
  void reset_parameters();
  /// ids [...] int64 -> [..., embedding_dim].
  at::Tensor forward(const at::Tensor& ids);
  void pretty_print(std::ostream& stream) const override;

  EmbeddingOptions options;
  at::Tensor weight;  ///< [num_embeddings, embedding_dim]
};
TORCH_MODULE(Embedding);

}  // namespace concord::nn
