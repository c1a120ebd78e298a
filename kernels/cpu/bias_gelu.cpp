// Fused bias + GELU epilogue kernels (see bias_gelu.h).
#include "bias_gelu.h"

#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

using vmath::GELU;

// ---- rows, fp32 on vectors V (8 or 16 lanes) and fp64 on scalars -------------------------------

template <class V>
CONCORD_ALWAYS_INLINE void fwd_rows_vec(float* u, const float* bias, float* g, int64_t rows,
                                        int64_t N) {
  constexpr int64_t L = vmath::lanes<V>();
  for (int64_t r = 0; r < rows; ++r) {
    float* ur = u + r * N;
    float* gr = g ? g + r * N : nullptr;
    for (int64_t c = 0; c < N; c += L) {
      const int64_t k = std::min<int64_t>(L, N - c);
      const V pre = vmath::load_n<V>(k, ur + c) + vmath::load_n<V>(k, bias + c);
      if (gr) {
        vmath::store_n<V>(k, ur + c, pre);
        vmath::store_n<V>(k, gr + c, GELU::value(pre));
      } else {
        vmath::store_n<V>(k, ur + c, GELU::value(pre));
      }
    }
  }
}

template <class V>
CONCORD_ALWAYS_INLINE void bwd_rows_vec(const float* u, float* dg, float* g, float* dbias,
                                        int64_t rows, int64_t N) {
  constexpr int64_t L = vmath::lanes<V>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* ur = u + r * N;
    float* dgr = dg + r * N;
    float* gr = g ? g + r * N : nullptr;
    for (int64_t c = 0; c < N; c += L) {
      const int64_t k = std::min<int64_t>(L, N - c);
      V v, d;
      GELU::value_grad(vmath::load_n<V>(k, ur + c), v, d);
      const V du = vmath::load_n<V>(k, dgr + c) * d;
      vmath::store_n<V>(k, dgr + c, du);
      if (gr) vmath::store_n<V>(k, gr + c, v);
      vmath::store_n<V>(k, dbias + c, vmath::load_n<V>(k, dbias + c) + du);
    }
  }
}

// The fp32 builds (cpu_isa.h): baseline 4-lane SSE2, AVX2+FMA, AVX-512.
void fwd_rows_base(float* u, const float* bias, float* g, int64_t rows, int64_t N) {
  fwd_rows_vec<vmath::vf4>(u, bias, g, rows, N);
}
void bwd_rows_base(const float* u, float* dg, float* g, float* dbias, int64_t rows, int64_t N) {
  bwd_rows_vec<vmath::vf4>(u, dg, g, dbias, rows, N);
}
#ifdef CONCORD_CPU_X86_VARIANTS
__attribute__((target("avx2,fma"))) void fwd_rows_avx2(float* u, const float* bias, float* g,
                                                      int64_t rows, int64_t N) {
  fwd_rows_vec<vmath::vf>(u, bias, g, rows, N);
}
__attribute__((target("avx2,fma"))) void bwd_rows_avx2(const float* u, float* dg, float* g,
                                                      float* dbias, int64_t rows, int64_t N) {
  bwd_rows_vec<vmath::vf>(u, dg, g, dbias, rows, N);
}
__attribute__((target("avx512f,avx2,fma"))) void fwd_rows_avx512(float* u, const float* bias,
                                                                 float* g, int64_t rows,
                                                                 int64_t N) {
  fwd_rows_vec<vmath::vf16>(u, bias, g, rows, N);
}
__attribute__((target("avx512f,avx2,fma"))) void bwd_rows_avx512(const float* u, float* dg,
                                                                 float* g, float* dbias,
                                                                 int64_t rows, int64_t N) {
  bwd_rows_vec<vmath::vf16>(u, dg, g, dbias, rows, N);
}
#endif

void fwd_rows(float* u, const float* bias, float* g, int64_t rows, int64_t N) {
  CONCORD_CPU_DISPATCH(fwd_rows, u, bias, g, rows, N);
}
void bwd_rows(const float* u, float* dg, float* g, float* dbias, int64_t rows, int64_t N) {
  CONCORD_CPU_DISPATCH(bwd_rows, u, dg, g, dbias, rows, N);
}

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
      bwd_rows(u + r0 * N, dg + r0 * N, g ? g + r0 * N : nullptr, acc.data() + k * N, r1 - r0,
               N);
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
