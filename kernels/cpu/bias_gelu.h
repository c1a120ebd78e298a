// Fused bias + GELU (exact, erf form) for the GEMM epilogues of the augmented shortcut
// (PanGu-π, arXiv 2312.17276, Eq. 4: T_i(Z) = W2_i GELU(W1_i Z + b1_i) + b2_i).
//
// Layouts: u, g, dg are [rows, N] row-major contiguous; bias and dbias are [N].
// bias_gelu_forward:  u[r, j] += bias[j] (in place: u becomes the pre-activation the backward
//                     needs) and, when g is not null, g[r, j] = GELU(u[r, j]) (overwritten);
//                     with g == nullptr, u is replaced by GELU(u + bias) (inference).
// bias_gelu_backward: from the saved pre-activation u and the incoming dg (in place):
//                     g[r, j] = GELU(u[r, j]) (recomputed, overwritten; may be nullptr),
//                     dg[r, j] *= GELU'(u[r, j]), dbias[j] = sum_r dg[r, j] (overwritten).
// One exp per element for value and derivative together. fp32 vectorised (the baseline, AVX2 or
// AVX-512 build, see cpu_isa.h), fp64 with libm. Rows are split over at::parallel_for; dbias is
// reduced per chunk then summed in a fixed order.
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

void bias_gelu_forward(float* u, const float* bias, float* g, int64_t rows, int64_t N);
void bias_gelu_forward(double* u, const double* bias, double* g, int64_t rows, int64_t N);

void bias_gelu_backward(const float* u, float* dg, float* g, float* dbias, int64_t rows,
                        int64_t N);
void bias_gelu_backward(const double* u, double* dg, double* g, double* dbias, int64_t rows,
                        int64_t N);

}  // namespace concord::kernels::cpu
