// GEGLU, the gated feed-forward activation of SDXL's transformer blocks (Shazeer, "GLU Variants
// Improve Transformer", arXiv 2002.05202, Eq. 5: FFN_GEGLU(x) = (GELU(x W) * x V) W2), in
// diffusers' layout: one linear layer writes p = [x V, x W] as [..., 2N] and
//
//   geglu(p) = p[..., :N] * GELU(p[..., N:])      (exact erf GELU, torch.nn.GELU("none"))
//
// `geglu` is differentiable. On CPU in fp32 and fp64 it runs one fused pass forward and one
// backward (kernels/cpu/geglu.cpp), saving only p; elsewhere (CUDA, bf16, the fused switch off,
// see fused.h) it runs `geglu_reference`, the composite chunk-gelu-multiply that autograd
// differentiates.
#pragma once

#include <ATen/ATen.h>

namespace concord::ops {

/// Differentiable GEGLU of p [..., 2N] -> [..., N]: fused kernels where available.
at::Tensor geglu(const at::Tensor& p);

/// The composite ATen reference: hidden, gate = p.chunk(2, -1); hidden * gelu(gate).
at::Tensor geglu_reference(const at::Tensor& p);

/// True when `geglu` on tensors like p runs the fused kernel (CPU fp32 / fp64, switch on).
bool geglu_is_fused(const at::Tensor& p);

}  // namespace concord::ops
