// Fused bias + GELU epilogue kernels (see bias_gelu.h).
#include "bias_gelu.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

using vmath::GELU;
using vmath::vf;

CONCORD_ALWAYS_INLINE vf ldn(int64_t count, const float* p) {
  return count == vmath::kLanes ? vmath::load(p) : vmath::load_partial(p, count);
}
CONCORD_ALWAYS_INLINE void stn(int64_t count, float* p, vf v) {
  if (count == vmath::kLanes) {
    vmath::store(p, v);
  } else {
    vmath::store_partial(p, v, count);
  }
}

// ---- rows, fp32 (vectors) and fp64 (scalars) -------------------------------------------------

CONCORD_ALWAYS_INLINE void fwd_rows_f32(float* u, const float* bias, float* g, int64_t rows,
                                        int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    float* ur = u + r * N;
    float* gr = g ? g + r * N : nullptr;
    for (int64_t c = 0; c < N; c += vmath::kLanes) {
      const int64_t k = std::min<int64_t>(vmath::kLanes, N - c);
      const vf pre = ldn(k, ur + c) + ldn(k, bias + c);
      if (gr) {
        stn(k, ur + c, pre);
        stn(k, gr + c, GELU::value(pre));
      } else {
        stn(k, ur + c, GELU::value(pre));
      }
    }
  }
}

CONCORD_ALWAYS_INLINE void bwd_rows_f32(const float* u, float* dg, float* g, float* dbias,
                                        int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* ur = u + r * N;
    float* dgr = dg + r * N;
    float* gr = g ? g + r * N : nullptr;
    for (int64_t c = 0; c < N; c += vmath::kLanes) {
      const int64_t k = std::min<int64_t>(vmath::kLanes, N - c);
      vf v, d;
      GELU::value_grad(ldn(k, ur + c), v, d);
      const vf du = ldn(k, dgr + c) * d;
      stn(k, dgr + c, du);
      if (gr) stn(k, gr + c, v);
      stn(k, dbias + c, ldn(k, dbias + c) + du);
    }
  }
}

void fwd_rows(float* u, const float* bias, float* g, int64_t rows, int64_t N) {
  fwd_rows_f32(u, bias, g, rows, N);
}
void bwd_rows(const float* u, float* dg, float* g, float* dbias, int64_t rows, int64_t N) {
  bwd_rows_f32(u, dg, g, dbias, rows, N);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CONCORD_BIAS_GELU_AVX2 1
__attribute__((target("avx2,fma"))) void fwd_rows_avx2(float* u, const float* bias, float* g,
                                                      int64_t rows, int64_t N) {
  fwd_rows_f32(u, bias, g, rows, N);
}
__attribute__((target("avx2,fma"))) void bwd_rows_avx2(const float* u, float* dg, float* g,
                                                      float* dbias, int64_t rows, int64_t N) {
  bwd_rows_f32(u, dg, g, dbias, rows, N);
}
bool has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

void fwd_rows(double* u, const double* bias, double* g, int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < N; ++c) {
      const double pre = u[r * N + c] + bias[c];
      if (g) {
        u[r * N + c] = pre;
        g[r * N + c] = GELU::value(pre);
      } else {
        u[r * N + c] = GELU::value(pre);
      }
    }
  }
}
void bwd_rows(const double* u, double* dg, double* g, double* dbias, int64_t rows, int64_t N) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < N; ++c) {
      double v, d;
      GELU::value_grad(u[r * N + c], v, d);
      const double du = dg[r * N + c] * d;
      dg[r * N + c] = du;
      if (g) g[r * N + c] = v;
      dbias[c] += du;
    }
  }
}

int64_t grain(int64_t N) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N)); }

template <class T>
void forward_impl(T* u, const T* bias, T* g, int64_t rows, int64_t N) {
  at::parallel_for(0, rows, grain(N), [&](int64_t r0, int64_t r1) {
#ifdef CONCORD_BIAS_GELU_AVX2
    if constexpr (std::is_same_v<T, float>) {
      if (has_avx2()) {
        return fwd_rows_avx2(u + r0 * N, bias, g ? g + r0 * N : nullptr, r1 - r0, N);
      }
    }
#endif
    fwd_rows(u + r0 * N, bias, g ? g + r0 * N : nullptr, r1 - r0, N);
  });
}

template <class T>
void backward_impl(const T* u, T* dg, T* g, T* dbias, int64_t rows, int64_t N) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t K = std::max<int64_t>(1, std::min({rows, threads, rows / grain(N) + 1}));
  std::vector<T> acc(static_cast<size_t>(K * N), T(0));
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t r0 = rows * k / K, r1 = rows * (k + 1) / K;
      T* gk = g ? g + r0 * N : nullptr;
#ifdef CONCORD_BIAS_GELU_AVX2
      if constexpr (std::is_same_v<T, float>) {
        if (has_avx2()) {
          bwd_rows_avx2(u + r0 * N, dg + r0 * N, gk, acc.data() + k * N, r1 - r0, N);
          continue;
        }
      }
#endif
      bwd_rows(u + r0 * N, dg + r0 * N, gk, acc.data() + k * N, r1 - r0, N);
    }
  });
  for (int64_t j = 0; j < N; ++j) {
    T s = 0;
    for (int64_t k = 0; k < K; ++k) s += acc[k * N + j];
    dbias[j] = s;
  }
}

}  // namespace

void bias_gelu_forward(float* u, const float* bias, float* g, int64_t rows, int64_t N) {
  forward_impl(u, bias, g, rows, N);
}
void bias_gelu_forward(double* u, const double* bias, double* g, int64_t rows, int64_t N) {
  forward_impl(u, bias, g, rows, N);
}
void bias_gelu_backward(const float* u, float* dg, float* g, float* dbias, int64_t rows,
                        int64_t N) {
  backward_impl(u, dg, g, dbias, rows, N);
}
void bias_gelu_backward(const double* u, double* dg, double* g, double* dbias, int64_t rows,
                        int64_t N) {
  backward_impl(u, dg, g, dbias, rows, N);
}

}  // namespace concord::kernels::cpu
