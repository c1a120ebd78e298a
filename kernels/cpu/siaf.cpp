// Fused CPU SIAF kernels (see siaf.h for the equations and layouts).
//
// One pass over x per direction. The forward evaluates all n shifted activations of a vector of
// channels while x sits in a register. The backward takes a block of up to four rows at a time:
// for each vector of channels it recomputes sigma and sigma' for every row of the block and term
// (value and derivative from one exp), writes dx, and adds the block's contributions to the
// chunk's da/db sums once per block instead of once per row (the sums stay in registers across
// the rows). fp32 is compiled three times, for the baseline ISA (8 lanes as SSE2 pairs), inside
// target("avx2,fma") (8 lanes) and inside target("avx512f,...") (16 lanes); cpu_isa() picks the
// build per call. Nothing is allocated per row; the backward allocates one da/db buffer per chunk.
#include "siaf.h"

#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

using vmath::GELU;
using vmath::ReLU;
using vmath::SiLU;

// ---- one row, fp64: scalar loops with libm ---------------------------------------------------

template <class Act>
CONCORD_ALWAYS_INLINE void forward_row(const double* __restrict x, const double* __restrict a,
                                       const double* __restrict b, double* __restrict y,
                                       int64_t C, int64_t n) {
  for (int64_t c = 0; c < C; ++c) {
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += a[i * C + c] * Act::value(x[c] + b[i * C + c]);
    y[c] = acc;
  }
}

// dx is overwritten; S[i, c] += dy sigma(u), P[i, c] += dy sigma'(u).
template <class Act>
CONCORD_ALWAYS_INLINE void backward_row(const double* __restrict dy, const double* __restrict x,
                                        const double* __restrict a, const double* __restrict b,
                                        double* __restrict dx, double* __restrict S,
                                        double* __restrict P, int64_t C, int64_t n) {
  for (int64_t c = 0; c < C; ++c) {
    double gsum = 0;
    for (int64_t i = 0; i < n; ++i) {
      double v, g;
      Act::value_grad(x[c] + b[i * C + c], v, g);
      gsum += a[i * C + c] * g;
      S[i * C + c] += dy[c] * v;
      P[i * C + c] += dy[c] * g;
    }
    dx[c] = dy[c] * gsum;
  }
}

template <class Act>
void forward_rows_f64(const double* x, const double* a, const double* b, double* y, int64_t rows,
                      int64_t C, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) forward_row<Act>(x + r * C, a, b, y + r * C, C, n);
}
template <class Act>
void backward_rows_f64(const double* dy, const double* x, const double* a, const double* b,
                       double* dx, double* S, double* P, int64_t rows, int64_t C, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    backward_row<Act>(dy + r * C, x + r * C, a, b, dx + r * C, S, P, C, n);
  }
}

// ---- fp32 on vectors V (8 or 16 lanes) -------------------------------------------------------

template <class Act, class V>
CONCORD_ALWAYS_INLINE V forward_lanes(V xv, const float* a, const float* b, int64_t c, int64_t C,
                                      int64_t n, int64_t count) {
  V acc = vmath::load_n<V>(count, a + c) * Act::value(xv + vmath::load_n<V>(count, b + c));
  for (int64_t i = 1; i < n; ++i) {
    acc += vmath::load_n<V>(count, a + i * C + c) *
           Act::value(xv + vmath::load_n<V>(count, b + i * C + c));
  }
  return acc;
}

template <class Act, class V>
CONCORD_ALWAYS_INLINE void forward_rows_vec(const float* __restrict x, const float* __restrict a,
                                            const float* __restrict b, float* __restrict y,
                                            int64_t rows, int64_t C, int64_t n) {
  constexpr int64_t L = vmath::lanes<V>();
  for (int64_t r = 0; r < rows; ++r, x += C, y += C) {
    int64_t c = 0;
    // Two independent vectors per step: the exp chains are long and serial, so the core needs
    // two of them in flight to keep its pipes busy.
    for (; c + 2 * L <= C; c += 2 * L) {
      const V x0 = vmath::load<V>(x + c), x1 = vmath::load<V>(x + c + L);
      V acc0 = vmath::load<V>(a + c) * Act::value(x0 + vmath::load<V>(b + c));
      V acc1 = vmath::load<V>(a + c + L) * Act::value(x1 + vmath::load<V>(b + c + L));
      for (int64_t i = 1; i < n; ++i) {
        const int64_t j = i * C + c;
        acc0 += vmath::load<V>(a + j) * Act::value(x0 + vmath::load<V>(b + j));
        acc1 += vmath::load<V>(a + j + L) * Act::value(x1 + vmath::load<V>(b + j + L));
      }
      vmath::store(y + c, acc0);
      vmath::store(y + c + L, acc1);
    }
    for (; c < C; c += L) {
      const int64_t k = std::min(L, C - c);
      vmath::store_n<V>(k, y + c,
                        forward_lanes<Act, V>(vmath::load_n<V>(k, x + c), a, b, c, C, n, k));
    }
  }
}

// Rows r < R of a block at x + r*C (likewise dy, dx), lanes [c, c + count): dx overwritten,
// the block's sums over its rows added to S[i, c..] (dy sigma) and P[i, c..] (dy sigma').
template <class Act, class V, int R>
CONCORD_ALWAYS_INLINE void backward_lanes(const float* dy, const float* x, const float* a,
                                          const float* b, float* dx, float* S, float* P,
                                          int64_t c, int64_t C, int64_t n, int64_t count) {
  V xv[R], dyv[R], gsum[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    xv[r] = vmath::load_n<V>(count, x + r * C + c);
    dyv[r] = vmath::load_n<V>(count, dy + r * C + c);
    gsum[r] = V{};
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i * C + c;
    const V av = vmath::load_n<V>(count, a + j), bv = vmath::load_n<V>(count, b + j);
    V s = V{}, p = V{};
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      V v, g;
      Act::value_grad(xv[r] + bv, v, g);
      gsum[r] += av * g;
      s += dyv[r] * v;
      p += dyv[r] * g;
    }
    vmath::store_n<V>(count, S + j, vmath::load_n<V>(count, S + j) + s);
    vmath::store_n<V>(count, P + j, vmath::load_n<V>(count, P + j) + p);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) vmath::store_n<V>(count, dx + r * C + c, dyv[r] * gsum[r]);
}

template <class Act, class V, int R>
CONCORD_ALWAYS_INLINE void backward_block(const float* dy, const float* x, const float* a,
                                          const float* b, float* dx, float* S, float* P,
                                          int64_t C, int64_t n) {
  constexpr int64_t L = vmath::lanes<V>();
  int64_t c = 0;
  for (; c + L <= C; c += L) backward_lanes<Act, V, R>(dy, x, a, b, dx, S, P, c, C, n, L);
  if (c < C) backward_lanes<Act, V, R>(dy, x, a, b, dx, S, P, c, C, n, C - c);
}

constexpr int kRowBlock = 4;

template <class Act, class V>
CONCORD_ALWAYS_INLINE void backward_rows_vec(const float* dy, const float* x, const float* a,
                                             const float* b, float* dx, float* S, float* P,
                                             int64_t rows, int64_t C, int64_t n) {
  int64_t r = 0;
  for (; r + kRowBlock <= rows; r += kRowBlock) {
    const int64_t o = r * C;
    backward_block<Act, V, kRowBlock>(dy + o, x + o, a, b, dx + o, S, P, C, n);
  }
  for (; r < rows; ++r) {
    const int64_t o = r * C;
    backward_block<Act, V, 1>(dy + o, x + o, a, b, dx + o, S, P, C, n);
  }
}

// ---- the builds: baseline, AVX2+FMA, AVX-512 ---------------------------------------------------

using ForwardRowsF = void (*)(const float*, const float*, const float*, float*, int64_t, int64_t,
                              int64_t);
using BackwardRowsF = void (*)(const float*, const float*, const float*, const float*, float*,
                               float*, float*, int64_t, int64_t, int64_t);

template <class Act>
void forward_rows_base(const float* x, const float* a, const float* b, float* y, int64_t rows,
                       int64_t C, int64_t n) {
  forward_rows_vec<Act, vmath::vf4>(x, a, b, y, rows, C, n);
}
template <class Act>
void backward_rows_base(const float* dy, const float* x, const float* a, const float* b,
                        float* dx, float* S, float* P, int64_t rows, int64_t C, int64_t n) {
  backward_rows_vec<Act, vmath::vf4>(dy, x, a, b, dx, S, P, rows, C, n);
}

#ifdef CONCORD_CPU_X86_VARIANTS
template <class Act>
__attribute__((target("avx2,fma"))) void forward_rows_avx2(const float* x, const float* a,
                                                           const float* b, float* y,
                                                           int64_t rows, int64_t C, int64_t n) {
  forward_rows_vec<Act, vmath::vf>(x, a, b, y, rows, C, n);
}
template <class Act>
__attribute__((target("avx2,fma"))) void backward_rows_avx2(const float* dy, const float* x,
                                                            const float* a, const float* b,
                                                            float* dx, float* S, float* P,
                                                            int64_t rows, int64_t C,
                                                            int64_t n) {
  backward_rows_vec<Act, vmath::vf>(dy, x, a, b, dx, S, P, rows, C, n);
}
template <class Act>
__attribute__((target("avx512f,avx2,fma"))) void forward_rows_avx512(const float* x,
                                                                     const float* a,
                                                                     const float* b, float* y,
                                                                     int64_t rows, int64_t C,
                                                                     int64_t n) {
  forward_rows_vec<Act, vmath::vf16>(x, a, b, y, rows, C, n);
}
template <class Act>
__attribute__((target("avx512f,avx2,fma"))) void backward_rows_avx512(
    const float* dy, const float* x, const float* a, const float* b, float* dx, float* S,
    float* P, int64_t rows, int64_t C, int64_t n) {
  backward_rows_vec<Act, vmath::vf16>(dy, x, a, b, dx, S, P, rows, C, n);
}
#endif

template <class Act>
ForwardRowsF forward_for_isa() {
#ifdef CONCORD_CPU_X86_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512: return &forward_rows_avx512<Act>;
    case CpuIsa::kAvx2: return &forward_rows_avx2<Act>;
    case CpuIsa::kBaseline: break;
  }
#endif
  return &forward_rows_base<Act>;
}
template <class Act>
BackwardRowsF backward_for_isa() {
#ifdef CONCORD_CPU_X86_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512: return &backward_rows_avx512<Act>;
    case CpuIsa::kAvx2: return &backward_rows_avx2<Act>;
    case CpuIsa::kBaseline: break;
  }
#endif
  return &backward_rows_base<Act>;
}

ForwardRowsF pick_forward_f32(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return forward_for_isa<SiLU>();
    case SiafActivation::kGELU: return forward_for_isa<GELU>();
    case SiafActivation::kReLU: return forward_for_isa<ReLU>();
  }
  return nullptr;
}
BackwardRowsF pick_backward_f32(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return backward_for_isa<SiLU>();
    case SiafActivation::kGELU: return backward_for_isa<GELU>();
    case SiafActivation::kReLU: return backward_for_isa<ReLU>();
  }
  return nullptr;
}

using ForwardRowsD = void (*)(const double*, const double*, const double*, double*, int64_t,
                              int64_t, int64_t);
using BackwardRowsD = void (*)(const double*, const double*, const double*, const double*,
                               double*, double*, double*, int64_t, int64_t, int64_t);
ForwardRowsD pick_forward_f64(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return &forward_rows_f64<SiLU>;
    case SiafActivation::kGELU: return &forward_rows_f64<GELU>;
    case SiafActivation::kReLU: return &forward_rows_f64<ReLU>;
  }
  return nullptr;
}
BackwardRowsD pick_backward_f64(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return &backward_rows_f64<SiLU>;
    case SiafActivation::kGELU: return &backward_rows_f64<GELU>;
    case SiafActivation::kReLU: return &backward_rows_f64<ReLU>;
  }
  return nullptr;
}

ForwardRowsF pick_forward(float*, SiafActivation act) { return pick_forward_f32(act); }
ForwardRowsD pick_forward(double*, SiafActivation act) { return pick_forward_f64(act); }
BackwardRowsF pick_backward(float*, SiafActivation act) { return pick_backward_f32(act); }
BackwardRowsD pick_backward(double*, SiafActivation act) { return pick_backward_f64(act); }

// About 32k activations per task: enough to amortise a thread wake-up, small enough to balance.
int64_t row_grain(int64_t C, int64_t n) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, C * n));
}

// Number of row chunks for the backward: each has its own da/db accumulators.
int64_t backward_chunks(int64_t rows, int64_t C, int64_t n) {
  int64_t by_work = std::max<int64_t>(1, rows / row_grain(C, n));
  int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min({rows, by_work, threads}));
}

// ---- drivers --------------------------------------------------------------------------------

template <class T>
void forward_impl(const T* x, const T* a, const T* b, T* y, int64_t rows, int64_t C, int64_t n,
                  SiafActivation act) {
  const auto fn = pick_forward(static_cast<T*>(nullptr), act);
  at::parallel_for(0, rows, row_grain(C, n), [&](int64_t r0, int64_t r1) {
    fn(x + r0 * C, a, b, y + r0 * C, r1 - r0, C, n);
  });
}

// The chunk sums S (dy sigma) and P (dy sigma') are reduced in a fixed order, then db = a * P.
template <class T, class A>
void reduce_chunks(const std::vector<T>& acc, int64_t K, int64_t nc, const A* a, A* da, A* db,
                   const T* a_wide) {
  for (int64_t j = 0; j < nc; ++j) {
    T s = 0, p = 0;
    for (int64_t k = 0; k < K; ++k) {
      s += acc[k * 2 * nc + j];
      p += acc[k * 2 * nc + nc + j];
    }
    da[j] = static_cast<A>(s);
    db[j] = static_cast<A>((a_wide ? a_wide[j] : static_cast<T>(a[j])) * p);
  }
}

template <class T>
void backward_impl(const T* dy, const T* x, const T* a, const T* b, T* dx, T* da, T* db,
                   int64_t rows, int64_t C, int64_t n, SiafActivation act) {
  const auto fn = pick_backward(static_cast<T*>(nullptr), act);
  const int64_t K = backward_chunks(rows, C, n);
  const int64_t nc = n * C;
  std::vector<T> acc(static_cast<size_t>(K * 2 * nc), T(0));  // per chunk: S then P
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      int64_t r0 = rows * k / K, r1 = rows * (k + 1) / K;
      T* S = acc.data() + k * 2 * nc;
      fn(dy + r0 * C, x + r0 * C, a, b, dx + r0 * C, S, S + nc, r1 - r0, C, n);
    }
  });
  reduce_chunks<T, T>(acc, K, nc, a, da, db, nullptr);
}

// bf16: blocks of rows are widened to fp32 scratch and run through the fp32 row kernels.
std::vector<float> widen(const c10::BFloat16* p, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(p[i]);
  return out;
}
void widen_into(const c10::BFloat16* p, int64_t count, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(p[i]);
}
void narrow_into(const float* p, int64_t count, c10::BFloat16* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = c10::BFloat16(p[i]);
}

}  // namespace

void siaf_forward(const float* x, const float* a, const float* b, float* y, int64_t rows,
                  int64_t channels, int64_t n_terms, SiafActivation act) {
  forward_impl(x, a, b, y, rows, channels, n_terms, act);
}
void siaf_forward(const double* x, const double* a, const double* b, double* y, int64_t rows,
                  int64_t channels, int64_t n_terms, SiafActivation act) {
  forward_impl(x, a, b, y, rows, channels, n_terms, act);
}
void siaf_forward(const c10::BFloat16* x, const c10::BFloat16* a, const c10::BFloat16* b,
                  c10::BFloat16* y, int64_t rows, int64_t C, int64_t n, SiafActivation act) {
  const ForwardRowsF fn = pick_forward_f32(act);
  const std::vector<float> af = widen(a, n * C), bf = widen(b, n * C);
  at::parallel_for(0, rows, row_grain(C, n), [&](int64_t r0, int64_t r1) {
    std::vector<float> xs(static_cast<size_t>(kRowBlock * C)), ys(xs.size());
    for (int64_t r = r0; r < r1; r += kRowBlock) {
      const int64_t m = std::min<int64_t>(kRowBlock, r1 - r);
      widen_into(x + r * C, m * C, xs.data());
      fn(xs.data(), af.data(), bf.data(), ys.data(), m, C, n);
      narrow_into(ys.data(), m * C, y + r * C);
    }
  });
}

void siaf_backward(const float* dy, const float* x, const float* a, const float* b, float* dx,
                   float* da, float* db, int64_t rows, int64_t channels, int64_t n_terms,
                   SiafActivation act) {
  backward_impl(dy, x, a, b, dx, da, db, rows, channels, n_terms, act);
}
void siaf_backward(const double* dy, const double* x, const double* a, const double* b,
                   double* dx, double* da, double* db, int64_t rows, int64_t channels,
                   int64_t n_terms, SiafActivation act) {
  backward_impl(dy, x, a, b, dx, da, db, rows, channels, n_terms, act);
}
void siaf_backward(const c10::BFloat16* dy, const c10::BFloat16* x, const c10::BFloat16* a,
                   const c10::BFloat16* b, c10::BFloat16* dx, c10::BFloat16* da,
                   c10::BFloat16* db, int64_t rows, int64_t C, int64_t n, SiafActivation act) {
  const BackwardRowsF fn = pick_backward_f32(act);
  const std::vector<float> af = widen(a, n * C), bf = widen(b, n * C);
  const int64_t K = backward_chunks(rows, C, n);
  const int64_t nc = n * C;
  std::vector<float> acc(static_cast<size_t>(K * 2 * nc), 0.0f);
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> dys(static_cast<size_t>(kRowBlock * C)), xs(dys.size()), dxs(dys.size());
    for (int64_t k = k0; k < k1; ++k) {
      float* S = acc.data() + k * 2 * nc;
      const int64_t r1 = rows * (k + 1) / K;
      for (int64_t r = rows * k / K; r < r1; r += kRowBlock) {
        const int64_t m = std::min<int64_t>(kRowBlock, r1 - r);
        widen_into(dy + r * C, m * C, dys.data());
        widen_into(x + r * C, m * C, xs.data());
        fn(dys.data(), xs.data(), af.data(), bf.data(), dxs.data(), S, S + nc, m, C, n);
        narrow_into(dxs.data(), m * C, dx + r * C);
      }
    }
  });
  reduce_chunks<float, c10::BFloat16>(acc, K, nc, a, da, db, af.data());
}

}  // namespace concord::kernels::cpu
