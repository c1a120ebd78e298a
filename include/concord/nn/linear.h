// y = x W^T + b (torch::nn::Linear's affine map) with a fast path for a single row: the decode
// step of generation runs one token of one sequence through every projection, and computing
// that as a matrix-vector product (BLAS gemv) instead of a 1-row matrix product (gemm) skips
// the weight packing some BLAS libraries do for every gemm call. With Debian's OpenBLAS
// (LibTorch 1.13) a 1 x 768 by 768 x 3072 product takes ~3x longer through gemm than through
// gemv; with MKL (pip LibTorch) the two are equal, so the fast path costs nothing there.
#pragma once
#include <ATen/ATen.h>

namespace concord::nn {

/// x [..., in] times weight [out, in] transposed, plus bias [out] (optional): [..., out].
/// Differentiable like at::linear.
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

}  // namespace concord::nn
