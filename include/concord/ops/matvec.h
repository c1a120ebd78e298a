// y = W x + b for a single input vector, the product every weight matrix takes in a decode step
// of generation (one new token of one sequence). Memory-bound: see kernels/cpu/gemv.h for why a
// kernel of its own beats BLAS here (it splits the weight rows over the threads).
#pragma once
#include <ATen/ATen.h>

namespace concord::ops {

/// weight [out, in], x [in], bias [out] or undefined -> [out]. No autograd: callers that need
/// gradients use at::addmv. The fused kernel serves contiguous fp32 CPU tensors when fused ops
/// are enabled (ops/fused.h); anything else goes to at::addmv / at::mv.
at::Tensor matvec(const at::Tensor& weight, const at::Tensor& x, const at::Tensor& bias = {});

/// True when matvec on these tensors runs the fused kernel.
bool matvec_is_fused(const at::Tensor& weight, const at::Tensor& x, const at::Tensor& bias = {});

}  // namespace concord::ops
