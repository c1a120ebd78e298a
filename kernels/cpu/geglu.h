// Fused GEGLU (Shazeer, "GLU Variants Improve Transformer", arXiv 2002.05202, Eq. 5:
// GEGLU(x) = GELU(x W) * (x V)), in diffusers' layout: the feed-forward's first linear layer
// writes both halves as one [rows, 2N] projection p, and
//
//   y[r, j] = p[r, j] * GELU(p[r, N + j]),   j < N     (hidden * gelu(gate), exact erf GELU)
//
// geglu_forward:  y [rows, N] from p [rows, 2N]; both row-major contiguous.
// geglu_backward: dp [rows, 2N] from p and dy [rows, N]:
//                 dp[r, j] = dy[r, j] GELU(g),  dp[r, N + j] = dy[r, j] p[r, j] GELU'(g),
//                 g = p[r, N + j], recomputed (the forward saves nothing but p).
// One pass over p each way, where the composite reads and writes [rows, N] temporaries 4 times
// forward (chunk copies, gelu, mul) and more backward. fp32 vectorised (baseline, AVX2 or
// AVX-512, see cpu_isa.h), fp64 with libm; rows split over at::parallel_for.
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

void geglu_forward(const float* p, float* y, int64_t rows, int64_t N);
void geglu_forward(const double* p, double* y, int64_t rows, int64_t N);

void geglu_backward(const float* p, const float* dy, float* dp, int64_t rows, int64_t N);
void geglu_backward(const double* p, const double* dy, double* dp, int64_t rows, int64_t N);

}  // namespace concord::kernels::cpu
