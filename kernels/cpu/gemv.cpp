#include "gemv.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

// Fewest weights a thread is woken for: below ~64K (256 KB) the fork/join costs more than the
// read it saves (a small model's projections are tens of microseconds).
constexpr int64_t kMinWeightsPerTask = int64_t(1) << 16;
// Weight rows streamed together against one load of the input: independent accumulator chains
// and that many concurrent memory streams per thread.
constexpr int kRows = 8;

// R consecutive weight rows (from r, bias and y already offset to the first) against x.
template <class V, int R>
CONCORD_ALWAYS_INLINE void row_block(const float* r, int64_t in, const float* x, const float* bias,
                                     float* y) {
  constexpr int64_t L = vmath::lanes<V>();
  const int64_t vec_end = in - in % L;
  V acc[R] = {};
  for (int64_t i = 0; i < vec_end; i += L) {
    const V xv = vmath::load<V>(x + i);
#pragma GCC unroll 8
    for (int k = 0; k < R; ++k) acc[k] += vmath::load<V>(r + k * in + i) * xv;
  }
#pragma GCC unroll 8
  for (int k = 0; k < R; ++k) {
    float s = vmath::hsum(acc[k]);
    for (int64_t i = vec_end; i < in; ++i) s += r[k * in + i] * x[i];
    y[k] = s + (bias ? bias[k] : 0.0f);
  }
}

// Rows [o0, o1) of y = W x + b.
template <class V>
CONCORD_ALWAYS_INLINE void gemv_rows(const float* w, int64_t in, const float* x, const float* bias,
                                     float* y, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + kRows <= o1; o += kRows) {
    row_block<V, kRows>(w + o * in, in, x, bias ? bias + o : nullptr, y + o);
  }
  for (; o < o1; ++o) row_block<V, 1>(w + o * in, in, x, bias ? bias + o : nullptr, y + o);
}

void rows_base(const float* w, int64_t in, const float* x, const float* bias, float* y,
               int64_t o0, int64_t o1) {
  gemv_rows<vmath::vf4>(w, in, x, bias, y, o0, o1);
}
#ifdef CONCORD_CPU_X86_VARIANTS
__attribute__((target("avx2,fma"))) void rows_avx2(const float* w, int64_t in, const float* x,
                                                  const float* bias, float* y, int64_t o0,
                                                  int64_t o1) {
  gemv_rows<vmath::vf>(w, in, x, bias, y, o0, o1);
}
#endif

void rows(const float* w, int64_t in, const float* x, const float* bias, float* y, int64_t o0,
          int64_t o1) {
#ifdef CONCORD_CPU_X86_VARIANTS
  if (cpu_isa() != CpuIsa::kBaseline) return rows_avx2(w, in, x, bias, y, o0, o1);
#endif
  rows_base(w, in, x, bias, y, o0, o1);
}

}  // namespace

void gemv(const float* w, int64_t out, int64_t in, const float* x, const float* bias, float* y) {
  if (out <= 0) return;
  // Grain in rows, a multiple of kRows so every task but the last runs whole row groups.
  int64_t grain = std::max<int64_t>(kRows, kMinWeightsPerTask / std::max<int64_t>(1, in));
  grain = (grain + kRows - 1) / kRows * kRows;
  at::parallel_for(0, out, grain, [&](int64_t o0, int64_t o1) { rows(w, in, x, bias, y, o0, o1); });
}

}  // namespace concord::kernels::cpu
