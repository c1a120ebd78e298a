// RMSNorm (Zhang & Sennrich, "Root Mean Square Layer Normalization", arXiv 1910.07467, Eq. 4):
//
//   y = w * x / sqrt(mean(x^2 over the last dim) + eps)
//
// as Llama, Mistral, Qwen2 and PanGu-π use it: no mean subtraction, no bias, the statistics in
// fp32 whatever the input dtype (as transformers' LlamaRMSNorm computes them), the scale applied
// after casting back. GPT-2's LayerNorm is torch::nn::LayerNorm. OLMo-2's RMSNorm applies the
// scale in fp32 and casts once (scale_before_cast): the same numbers in fp32, not in bf16.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace concord::nn {

struct RMSNormOptions {
  /* implicit */ RMSNormOptions(int64_t dim) : dim_(dim) {}  // NOLINT
  /// Size of the normalised (last) dimension.
  TORCH_ARG(int64_t, dim);
  /// Added to the mean square before the square root.
  TORCH_ARG(double, eps) = 1e-6;
  /// Multiply by w in fp32, then cast to the input dtype (OLMo-2), instead of casting first.
  TORCH_ARG(bool, scale_before_cast) = false;
};

class RMSNormImpl : public torch::nn::Cloneable<RMSNormImpl> {
 public:
  explicit RMSNormImpl(RMSNormOptions options);
  void reset() override;
  /// x: [..., dim] -> same shape and dtype.
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  RMSNormOptions options;
  at::Tensor weight;  ///< [dim], initialised to ones
};
TORCH_MODULE(RMSNorm);

}  // namespace concord::nn
