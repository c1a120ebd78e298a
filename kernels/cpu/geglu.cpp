// Fused GEGLU kernels (see geglu.h).
#include "geglu.h"

#include <algorithm>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

using vmath::GELU;

template <class V>
CONCORD_ALWAYS_INLINE void fwd_rows_vec(const float* p, float* y, int64_t rows, int64_t N) {
  constexpr int64_t L = vmath::lanes<V>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* hidden = p + r * 2 * N;
    const float* gate = hidden + N;
    float* yr = y + r * N;
    for (int64_t c = 0; c < N; c += L) {
      const int64_t k = std::min<int64_t>(L, N - c);
      vmath::store_n<V>(k, yr + c,
                        vmath::load_n<V>(k, hidden + c) * GELU::value(vmath::load_n<V>(k, gate + c)));
    }
  }
}

template <class V>
CONCORD_ALWAYS_INLINE void bwd_rows_vec(const float* p, const float* dy, float* dp, int64_t rows,
                                        int64_t N) {
  constexpr int64_t L = vmath::lanes<V>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* hidden = p + r * 2 * N;
    const float* gate = hidden + N;
    const float* dyr = dy + r * N;
    float* dhidden = dp + r * 2 * N;
    float* dgate = dhidden + N;
    for (int64_t c = 0; c < N; c += L) {
      const int64_t k = std::min<int64_t>(L, N - c);
      V v, d;
      GELU::value_grad(vmath::load_n<V>(k, gate + c), v, d);
      const V g = vmath::load_n<V>(k, dyr + c);
      vmath::store_n<V>(k, dhidden + c, g * v);
      vmath::store_n<V>(k, dgate + c, g * vmath::load_n<V>(k, hidden + c) * d);
    }
  }
}

// The fp32 builds (cpu_isa.h): baseline 4-lane SSE2, AVX2+FMA, AVX-512.
void fwd_rows_base(const float* p, float* y, int64_t rows, int64_t N) {
  fwd_rows_vec<vmath::vf4>(p, y, rows, N);
}
void bwd_rows_base(const float* p, const float* dy, float* dp, int64_t rows, int64_t N) {
  bwd_rows_vec<vmath::vf4>(p, dy, dp, rows, N);
}
#ifdef CONCORD_CPU_X86_VARIANTS
__attribute__((target("avx2,fma"))) void fwd_rows_avx2(const float* p, float* y, int64_t rows,
                                                      int64_t N) {
  fwd_rows_vec<vmath::vf>(p, y, rows, N);
}
__attribute__((target("avx2,fma"))) void bwd_rows_avx2(const float* p, const float* dy, float* dp,
                                                      int64_t rows, int64_t N) {
  bwd_rows_vec<vmath::vf>(p, dy, dp, rows, N);
}
__attribute__((target("avx512f,avx2,fma"))) void fwd_rows_avx512(const float* p, float* y,
                                                                 int64_t rows, int64_t N) {
  fwd_rows_vec<vmath::vf16>(p, y, rows, N);
}
__attribute__((target("avx512f,avx2,fma"))) void bwd_rows_avx512(const float* p, const float* dy,
                                                                 float* dp, int64_t rows,
                                                                 int64_t N) {
  bwd_rows_vec<vmath::vf16>(p, dy, dp, rows, N);
}
#endif

void fwd_rows(const float* p, float* y, int64_t rows, int64_t N) {
  CONCORD_CPU_DISPATCH(fwd_rows, p, y, rows, N);
}
void bwd_rows(const float* p, const float* dy, float* dp, int64_t rows, int64_t N) {
  CONCORD_CPU_DISPATCH(bwd_rows, p, dy, dp, rows, N);
}

void fwd_rows(const double* p, double* y, int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < N; ++c) y[r * N + c] = p[r * 2 * N + c] * GELU::value(p[r * 2 * N + N + c]);
  }
}
void bwd_rows(const double* p, const double* dy, double* dp, int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < N; ++c) {
      double v, d;
      GELU::value_grad(p[r * 2 * N + N + c], v, d);
      const double g = dy[r * N + c];
      dp[r * 2 * N + c] = g * v;
      dp[r * 2 * N + N + c] = g * p[r * 2 * N + c] * d;
    }
  }
}

int64_t grain(int64_t N) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N)); }

template <class T>
void forward_impl(const T* p, T* y, int64_t rows, int64_t N) {
  at::parallel_for(0, rows, grain(N), [&](int64_t r0, int64_t r1) {
    fwd_rows(p + r0 * 2 * N, y + r0 * N, r1 - r0, N);
  });
}

template <class T>
void backward_impl(const T* p, const T* dy, T* dp, int64_t rows, int64_t N) {
  at::parallel_for(0, rows, grain(N), [&](int64_t r0, int64_t r1) {
    bwd_rows(p + r0 * 2 * N, dy + r0 * N, dp + r0 * 2 * N, r1 - r0, N);
  });
}

}  // namespace

void geglu_forward(const float* p, float* y, int64_t rows, int64_t N) {
  forward_impl(p, y, rows, N);
}
void geglu_forward(const double* p, double* y, int64_t rows, int64_t N) {
  forward_impl(p, y, rows, N);
}
void geglu_backward(const float* p, const float* dy, float* dp, int64_t rows, int64_t N) {
  backward_impl(p, dy, dp, rows, N);
}
void geglu_backward(const double* p, const double* dy, double* dp, int64_t rows, int64_t N) {
  backward_impl(p, dy, dp, rows, N);
}

}  // namespace concord::kernels::cpu
