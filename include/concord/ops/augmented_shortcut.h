// Augmented shortcuts, PanGu-π (Wang et al., arXiv 2312.17276), Eq. 4:
//
//   AugMSA(Z) = MSA(Z) + Z + sum_{i=1..T} T_i(Z),   T_i(Z) = W2_i GELU(W1_i Z + b1_i) + b2_i
//
// each T_i the bottleneck d -> h = d/r -> d of Sec. 4.1 (two FC layers around a GELU), which the
// paper uses in place of Eq. 5's full-width T_i(Z) = sigma(Z Theta_i). This op computes the sum of the T branches,
// sum_i T_i(z); the module adds MSA(Z) and Z. Because the branches share their input and their
// outputs are summed, the T first GEMMs are one [rows, d] x [d, T*h] GEMM and the T second GEMMs
// one [rows, T*h] x [T*h, d] GEMM; the bias + GELU between them is one fused pass (forward),
// and GELU's derivative, the recomputed GELU and the bias gradient one fused pass (backward).
// Only z, the weights and the pre-activation [rows, T*h] are saved for the backward.
//
// Layouts (torch.nn.Linear's, stacked over branches): z [..., d]; w1 [T, h, d]; b1 [T, h];
// w2 [T, d, h]; b2 [T, d]. Output: z's shape.
#pragma once
#include <ATen/ATen.h>

namespace concord::ops {

/// Differentiable sum_i T_i(z): fused on CPU fp32/fp64 (vectorised bias + GELU kernels) and, in a
/// build with CUDA dispatch, on CUDA fp32/fp16/bf16 (cuBLAS GEMMs + kernels/cuda/bias_gelu.cu);
/// the composite reference elsewhere or with the fused ops switched off (concord/ops/fused.h).
at::Tensor augmented_shortcut(const at::Tensor& z, const at::Tensor& w1, const at::Tensor& b1,
                              const at::Tensor& w2, const at::Tensor& b2);

/// True when `augmented_shortcut` on inputs like z runs the fused path; false when it runs the
/// composite.
bool augmented_shortcut_is_fused(const at::Tensor& z);

/// Composite ATen reference: sum_i linear(gelu(linear(z, w1[i], b1[i])), w2[i], b2[i]).
at::Tensor augmented_shortcut_reference(const at::Tensor& z, const at::Tensor& w1,
                                        const at::Tensor& b1, const at::Tensor& w2,
                                        const at::Tensor& b2);

}  // namespace concord::ops
