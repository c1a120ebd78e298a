// Fused CPU kernels of the series informed activation (SIAF), PanGu-π (arXiv 2312.17276), Eq. 7:
//
//   y[r, c] = sum_{i < n} a[i, c] * sigma(x[r, c] + b[i, c])
//
// Layouts (all contiguous, row-major): x, y, dy, dx are [rows, C]; a, b, da, db are [n, C].
// Outputs are overwritten, never accumulated. The backward recomputes sigma from x (nothing is
// saved between the passes but x) and returns
//   dx[r, c] = dy[r, c] * sum_i a[i, c] * sigma'(x[r, c] + b[i, c])
//   da[i, c] = sum_r dy[r, c] * sigma(x[r, c] + b[i, c])
//   db[i, c] = a[i, c] * sum_r dy[r, c] * sigma'(x[r, c] + b[i, c])
// Rows are split across at::parallel_for; each chunk of rows accumulates da/db in its own
// buffer and the chunks are summed in a fixed order, so results do not depend on scheduling.
// fp32 runs vectorised (a baseline SSE2, an AVX2+FMA and an AVX-512 build; cpu_isa.h picks one
// per call), fp64 runs with libm's exp/erf, bf16 converts blocks of rows to fp32 and
// accumulates in fp32.
#pragma once
#include <cstdint>

#include <c10/util/BFloat16.h>

namespace concord::kernels::cpu {

/// The base activation sigma of Eq. 7. GELU is the exact (erf) form, as torch.nn.GELU().
enum class SiafActivation : int32_t { kSiLU = 0, kGELU = 1, kReLU = 2 };

void siaf_forward(const float* x, const float* a, const float* b, float* y, int64_t rows,
                  int64_t channels, int64_t n_terms, SiafActivation act);
void siaf_forward(const double* x, const double* a, const double* b, double* y, int64_t rows,
                  int64_t channels, int64_t n_terms, SiafActivation act);
void siaf_forward(const c10::BFloat16* x, const c10::BFloat16* a, const c10::BFloat16* b,
                  c10::BFloat16* y, int64_t rows, int64_t channels, int64_t n_terms,
                  SiafActivation act);

void siaf_backward(const float* dy, const float* x, const float* a, const float* b, float* dx,
                   float* da, float* db, int64_t rows, int64_t channels, int64_t n_terms,
                   SiafActivation act);
void siaf_backward(const double* dy, const double* x, const double* a, const double* b,
                   double* dx, double* da, double* db, int64_t rows, int64_t channels,
                   int64_t n_terms, SiafActivation act);
void siaf_backward(const c10::BFloat16* dy, const c10::BFloat16* x, const c10::BFloat16* a,
                   const c10::BFloat16* b, c10::BFloat16* dx, c10::BFloat16* da,
                   c10::BFloat16* db, int64_t rows, int64_t channels, int64_t n_terms,
                   SiafActivation act);

}  // namespace concord::kernels::cpu
