// Fused AdamW update (see adamw.h).
#include "adamw.h"

#include <algorithm>
#include <cmath>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#ifdef CONCORD_CPU_X86_VARIANTS
#include <immintrin.h>
#endif

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code
// gcc 12 flags _mm512_undefined_ps() inside _mm512_sqrt_ps as maybe-uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace concord::kernels::cpu {
namespace {

// Fewest elements per task: 256 KB of each array, so a wake-up is worth it.
constexpr int64_t kGrain = 65536;

CONCORD_ALWAYS_INLINE void update_one(float& p, float g, float& m, float& v,
                                      const AdamWScalars& s) {
  const float mi = s.beta1 * m + (1.0f - s.beta1) * g;
  const float vi = s.beta2 * v + (1.0f - s.beta2) * g * g;
  m = mi;
  v = vi;
  p = p * s.decay_factor - s.step_size * mi / (std::sqrt(vi) * s.inv_sqrt_bc2 + s.eps);
}

// The vector loop over [i0, i1) on vectors V with square root SQRT, then the scalar tail. A
// macro, not a template: the ISA's sqrt intrinsic may only be called from a function compiled
// for that ISA, and gcc inlines a template's calls in the template's own (baseline) context.
#define CONCORD_ADAMW_RANGE(V, SQRT)                                                           \
  constexpr int64_t L = vmath::lanes<V>();                                                     \
  const V b1 = vmath::splat<V>(s.beta1), b2 = vmath::splat<V>(s.beta2);                        \
  const V c1 = vmath::splat<V>(1.0f - s.beta1), c2 = vmath::splat<V>(1.0f - s.beta2);          \
  const V decay = vmath::splat<V>(s.decay_factor), step = vmath::splat<V>(s.step_size);        \
  const V inv_bc2 = vmath::splat<V>(s.inv_sqrt_bc2), eps = vmath::splat<V>(s.eps);             \
  int64_t i = i0;                                                                              \
  for (; i + L <= i1; i += L) {                                                                \
    const V gi = vmath::load<V>(g + i);                                                        \
    const V mi = b1 * vmath::load<V>(m + i) + c1 * gi;                                         \
    const V vi = b2 * vmath::load<V>(v + i) + c2 * gi * gi;                                    \
    vmath::store(m + i, mi);                                                                   \
    vmath::store(v + i, vi);                                                                   \
    const V denom = SQRT(vi) * inv_bc2 + eps;                                                  \
    vmath::store(p + i, vmath::load<V>(p + i) * decay - step * mi / denom);                    \
  }                                                                                            \
  for (; i < i1; ++i) update_one(p[i], g[i], m[i], v[i], s);

#ifdef CONCORD_CPU_X86_VARIANTS
void range_base(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1,
                const AdamWScalars& s) {
#define CONCORD_SQRT_SSE(x) ((vmath::vf4)_mm_sqrt_ps((__m128)(x)))
  CONCORD_ADAMW_RANGE(vmath::vf4, CONCORD_SQRT_SSE)
}
__attribute__((target("avx2,fma"))) void range_avx2(float* p, const float* g, float* m, float* v,
                                                   int64_t i0, int64_t i1, const AdamWScalars& s) {
#define CONCORD_SQRT_AVX2(x) ((vmath::vf)_mm256_sqrt_ps((__m256)(x)))
  CONCORD_ADAMW_RANGE(vmath::vf, CONCORD_SQRT_AVX2)
}
__attribute__((target("avx512f,avx2,fma"))) void range_avx512(float* p, const float* g, float* m,
                                                             float* v, int64_t i0, int64_t i1,
                                                             const AdamWScalars& s) {
#define CONCORD_SQRT_AVX512(x) ((vmath::vf16)_mm512_sqrt_ps((__m512)(x)))
  CONCORD_ADAMW_RANGE(vmath::vf16, CONCORD_SQRT_AVX512)
}
#else
void range_base(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1,
                const AdamWScalars& s) {
  for (int64_t i = i0; i < i1; ++i) update_one(p[i], g[i], m[i], v[i], s);
}
#endif

void range_any(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1,
               const AdamWScalars& s) {
  CONCORD_CPU_DISPATCH(range, p, g, m, v, i0, i1, s);
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s) {
  // Tasks start on multiples of 16 elements, so only the array's own tail takes the scalar
  // path, whatever the thread count.
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kGrain / kBlock, [&](int64_t b0, int64_t b1) {
    range_any(p, g, m, v, b0 * kBlock, std::min(n, b1 * kBlock), s);
  });
}

}  // namespace concord::kernels::cpu
