// y = x W^T + b (torch::nn::Linear's affine map) with a fast path for a single row: the decode
// step of generation runs one token of one sequence through every projection, and computing
// that as a matrix-vector product (BLAS gemv) instead of a 1-row matrix product (gemm) skips
// the weight packing some BLAS libraries do for every gemm call. With Debian's OpenBLAS
// (LibTorch 1.13, one thread) a one-row product with a [3072, 768], [768, 3072] or [50257, 768]
// weight took 4.5x, 4.3x and 2.4x longer through at::linear (gemm) than through at::addmv
// (gemv), and the packing (sgemm_incopy) was 19% of a GPT-2-sized generation profile; with MKL
// (pip LibTorch 2.15) the two paths are equal within noise, so the fast path costs nothing there.
//
// nn::Linear is the module form: torch::nn::Linear's parameters, names and initialisation
// (Kaiming-uniform weight with a = sqrt(5), bias U(-1/sqrt(in), 1/sqrt(in)), the same random
// draws), with forward() through linear() above and no initialisation at all under a
// SkipInitGuard (concord/nn/init.h), so a checkpoint loader never materialises a throw-away copy.
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace concord::nn {

/// x [..., in] times weight [out, in] transposed, plus bias [out] (optional): [..., out].
/// Differentiable like at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

struct LinearOptions {
  LinearOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  /// Input width.
  TORCH_ARG(int64_t, in_features);
  /// Output width.
  TORCH_ARG(int64_t, out_features);
  /// Learn an additive bias.
  TORCH_ARG(bool, bias) = true;
};

class LinearImpl : public torch::nn::Cloneable<LinearImpl> {
 public:
  LinearImpl(int64_t in_features, int64_t out_features)
      : LinearImpl(LinearOptions(in_features, out_features)) {}
  explicit LinearImpl(LinearOptions options);
  void reset() override;
  /// Redraws the parameters as torch::nn::Linear does.
  void reset_parameters();
  /// x [..., in] -> [..., out].
  at::Tensor forward(const at::Tensor& x);
  void pretty_print(std::ostream& stream) const override;

  LinearOptions options;
  at::Tensor weight;  ///< [out, in]
  at::Tensor bias;    ///< [out]; undefined without bias
};
TORCH_MODULE(Linear);

}  // namespace concord::nn
