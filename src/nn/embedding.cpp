#include "concord/nn/embedding.h"

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/init.h"

namespace concord::nn {

EmbeddingImpl::EmbeddingImpl(EmbeddingOptions o) : options(std::move(o)) { reset(); }

void EmbeddingImpl::reset() {
  CONCORD_CHECK(options.num_embeddings() > 0 && options.embedding_dim() > 0,
                "Embedding: num_embeddings and embedding_dim must be positive, got ",
                options.num_embeddings(), ", ", options.embedding_dim());
  weight = register_parameter(
      "weight", torch::empty({options.num_embeddings(), options.embedding_dim()}));
  if (!skip_init_enabled()) reset_parameters();
}

void EmbeddingImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  weight.normal_(0.0, 1.0);
}

at::Tensor EmbeddingImpl::forward(const at::Tensor& ids) { return at::embedding(weight, ids); }

void EmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::Embedding(num_embeddings=" << options.num_embeddings()
         << ", embedding_dim=" << options.embedding_dim() << ")";
}

}  // namespace concord::nn
