// y = x W^T + b (torch::nn::Linear's affine map) with a fast path for a single row: the decode
// step of generation runs one token of one sequence through every projection, and computing
// that as a matrix-vector product (BLAS gemv) instead of a 1-row matrix product (gemm) skips
// the weight packing some BLAS libraries do for every gemm call. With Debian's OpenBLAS
// (LibTorch 1.13, one thread) a one-row product with a [3072, 768], [768, 3072] or [50257, 768]
// weight took 4.5x, 4.3x and 2.4x longer through at::linear (gemm) than through at::addmv
// (gemv), and the packing (sgemm_incopy) was 19% of a GPT-2-sized generation profile; with MKL
// (pip LibTorch 2.15) the two paths are equal within noise, so the fast path costs nothing there.
#pragma once
#include <ATen/ATen.h>

namespace concord::nn {

/// x [..., in] times weight [out, in] transposed, plus bias [out] (optional): [..., out].
/// Differentiable like at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace concord::nn
