// Fused CPU SIAF kernels (see siaf.h for the equations and layouts).
//
// One pass over x per direction: the forward evaluates all n shifted activations of a row while
// the row is in L1, the backward recomputes them (value and derivative from one exp) and folds
// them into dx and the per-chunk da/db sums. The inner loops run over channels with restrict
// pointers so gcc vectorises them; the fp32 row loops are compiled twice, once for the baseline
// ISA and once with target("avx2,fma"), and the build is picked once at run time.
#include "siaf.h"

#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>

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

// ---- one row, fp32: 8 channels at a time, all n terms while x and dy sit in registers --------

using vmath::vf;

// Loads/stores of `count` lanes; count == kLanes is the hot case and folds to one vector move.
CONCORD_ALWAYS_INLINE vf ld(int64_t count, const float* p) {
  return count == vmath::kLanes ? vmath::load(p) : vmath::load_partial(p, count);
}
CONCORD_ALWAYS_INLINE void st(int64_t count, float* p, vf v) {
  if (count == vmath::kLanes) {
    vmath::store(p, v);
  } else {
    vmath::store_partial(p, v, count);
  }
}

template <class Act>
CONCORD_ALWAYS_INLINE vf forward_lanes(vf xv, const float* a, const float* b, int64_t c,
                                       int64_t C, int64_t n, int64_t count) {
  vf acc = ld(count, a + c) * Act::value(xv + ld(count, b + c));
  for (int64_t i = 1; i < n; ++i) {
    acc += ld(count, a + i * C + c) * Act::value(xv + ld(count, b + i * C + c));
  }
  return acc;
}

template <class Act>
CONCORD_ALWAYS_INLINE void forward_row(const float* __restrict x, const float* __restrict a,
                                       const float* __restrict b, float* __restrict y, int64_t C,
                                       int64_t n) {
  int64_t c = 0;
  for (; c + vmath::kLanes <= C; c += vmath::kLanes) {
    vmath::store(y + c, forward_lanes<Act>(vmath::load(x + c), a, b, c, C, n, vmath::kLanes));
  }
  if (c < C) {  // tail: zero-padded lanes, only the live ones stored
    const int64_t k = C - c;
    const vf xv = vmath::load_partial(x + c, k);
    vmath::store_partial(y + c, forward_lanes<Act>(xv, a, b, c, C, n, k), k);
  }
}

template <class Act>
CONCORD_ALWAYS_INLINE void backward_lanes(const float* dy, const float* x, const float* a,
                                          const float* b, float* dx, float* S, float* P,
                                          int64_t c, int64_t C, int64_t n, int64_t count) {
  const vf xv = ld(count, x + c), dyv = ld(count, dy + c);
  vf gsum = vf{};
  for (int64_t i = 0; i < n; ++i) {
    const int64_t j = i * C + c;
    vf v, g;
    Act::value_grad(xv + ld(count, b + j), v, g);
    gsum += ld(count, a + j) * g;
    st(count, S + j, ld(count, S + j) + dyv * v);
    st(count, P + j, ld(count, P + j) + dyv * g);
  }
  st(count, dx + c, dyv * gsum);
}

template <class Act>
CONCORD_ALWAYS_INLINE void backward_row(const float* __restrict dy, const float* __restrict x,
                                        const float* __restrict a, const float* __restrict b,
                                        float* __restrict dx, float* __restrict S,
                                        float* __restrict P, int64_t C, int64_t n) {
  int64_t c = 0;
  for (; c + vmath::kLanes <= C; c += vmath::kLanes) {
    backward_lanes<Act>(dy, x, a, b, dx, S, P, c, C, n, vmath::kLanes);
  }
  if (c < C) backward_lanes<Act>(dy, x, a, b, dx, S, P, c, C, n, C - c);
}

// ---- row ranges, per activation and ISA -----------------------------------------------------

template <class T>
using ForwardRows = void (*)(const T*, const T*, const T*, T*, int64_t, int64_t, int64_t);
template <class T>
using BackwardRows = void (*)(const T*, const T*, const T*, const T*, T*, T*, T*, int64_t,
                              int64_t, int64_t);

template <class Act, class T>
void forward_rows(const T* x, const T* a, const T* b, T* y, int64_t rows, int64_t C,
                  int64_t n) {
  for (int64_t r = 0; r < rows; ++r) forward_row<Act>(x + r * C, a, b, y + r * C, C, n);
}
template <class Act, class T>
void backward_rows(const T* dy, const T* x, const T* a, const T* b, T* dx, T* S, T* P,
                   int64_t rows, int64_t C, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    backward_row<Act>(dy + r * C, x + r * C, a, b, dx + r * C, S, P, C, n);
  }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CONCORD_SIAF_AVX2 1
#define CONCORD_SIAF_AVX2_ROWS(ACT)                                                            \
  __attribute__((target("avx2,fma"))) void forward_rows_avx2_##ACT(                           \
      const float* x, const float* a, const float* b, float* y, int64_t rows, int64_t C,      \
      int64_t n) {                                                                             \
    for (int64_t r = 0; r < rows; ++r) forward_row<ACT>(x + r * C, a, b, y + r * C, C, n);    \
  }                                                                                            \
  __attribute__((target("avx2,fma"))) void backward_rows_avx2_##ACT(                          \
      const float* dy, const float* x, const float* a, const float* b, float* dx, float* S,   \
      float* P, int64_t rows, int64_t C, int64_t n) {                                          \
    for (int64_t r = 0; r < rows; ++r) {                                                       \
      backward_row<ACT>(dy + r * C, x + r * C, a, b, dx + r * C, S, P, C, n);                 \
    }                                                                                          \
  }
CONCORD_SIAF_AVX2_ROWS(SiLU)
CONCORD_SIAF_AVX2_ROWS(GELU)
CONCORD_SIAF_AVX2_ROWS(ReLU)
#undef CONCORD_SIAF_AVX2_ROWS

bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#else
bool cpu_has_avx2() { return false; }
#endif

template <class T>
ForwardRows<T> pick_forward(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return &forward_rows<SiLU, T>;
    case SiafActivation::kGELU: return &forward_rows<GELU, T>;
    case SiafActivation::kReLU: return &forward_rows<ReLU, T>;
  }
  return nullptr;
}
template <class T>
BackwardRows<T> pick_backward(SiafActivation act) {
  switch (act) {
    case SiafActivation::kSiLU: return &backward_rows<SiLU, T>;
    case SiafActivation::kGELU: return &backward_rows<GELU, T>;
    case SiafActivation::kReLU: return &backward_rows<ReLU, T>;
  }
  return nullptr;
}

template <>
ForwardRows<float> pick_forward<float>(SiafActivation act) {
#ifdef CONCORD_SIAF_AVX2
  if (cpu_has_avx2()) {
    switch (act) {
      case SiafActivation::kSiLU: return &forward_rows_avx2_SiLU;
      case SiafActivation::kGELU: return &forward_rows_avx2_GELU;
      case SiafActivation::kReLU: return &forward_rows_avx2_ReLU;
    }
  }
#endif
  switch (act) {
    case SiafActivation::kSiLU: return &forward_rows<SiLU, float>;
    case SiafActivation::kGELU: return &forward_rows<GELU, float>;
    case SiafActivation::kReLU: return &forward_rows<ReLU, float>;
  }
  return nullptr;
}
template <>
BackwardRows<float> pick_backward<float>(SiafActivation act) {
#ifdef CONCORD_SIAF_AVX2
  if (cpu_has_avx2()) {
    switch (act) {
      case SiafActivation::kSiLU: return &backward_rows_avx2_SiLU;
      case SiafActivation::kGELU: return &backward_rows_avx2_GELU;
      case SiafActivation::kReLU: return &backward_rows_avx2_ReLU;
    }
  }
#endif
  switch (act) {
    case SiafActivation::kSiLU: return &backward_rows<SiLU, float>;
    case SiafActivation::kGELU: return &backward_rows<GELU, float>;
    case SiafActivation::kReLU: return &backward_rows<ReLU, float>;
  }
  return nullptr;
}

// About 32k activations per task: enough to amortise a thread wake-up, small enough to balance.
int64_t row_grain(int64_t C, int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, C * n)); }

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
  ForwardRows<T> fn = pick_forward<T>(act);
  at::parallel_for(0, rows, row_grain(C, n), [&](int64_t r0, int64_t r1) {
    fn(x + r0 * C, a, b, y + r0 * C, r1 - r0, C, n);
  });
}

template <class T>
void backward_impl(const T* dy, const T* x, const T* a, const T* b, T* dx, T* da, T* db,
                   int64_t rows, int64_t C, int64_t n, SiafActivation act) {
  BackwardRows<T> fn = pick_backward<T>(act);
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
  for (int64_t j = 0; j < nc; ++j) {
    T s = 0, p = 0;
    for (int64_t k = 0; k < K; ++k) {
      s += acc[k * 2 * nc + j];
      p += acc[k * 2 * nc + nc + j];
    }
    da[j] = s;
    db[j] = a[j] * p;
  }
}

// bf16: rows are widened to fp32 scratch and run through the fp32 row kernels.
std::vector<float> widen(const c10::BFloat16* p, int64_t count) {
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) out[i] = static_cast<float>(p[i]);
  return out;
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
  ForwardRows<float> fn = pick_forward<float>(act);
  const std::vector<float> af = widen(a, n * C), bf = widen(b, n * C);
  at::parallel_for(0, rows, row_grain(C, n), [&](int64_t r0, int64_t r1) {
    std::vector<float> xs(static_cast<size_t>(C)), ys(static_cast<size_t>(C));
    for (int64_t r = r0; r < r1; ++r) {
      const c10::BFloat16* xr = x + r * C;
      for (int64_t c = 0; c < C; ++c) xs[c] = static_cast<float>(xr[c]);
      fn(xs.data(), af.data(), bf.data(), ys.data(), 1, C, n);
      c10::BFloat16* yr = y + r * C;
      for (int64_t c = 0; c < C; ++c) yr[c] = c10::BFloat16(ys[c]);
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
  BackwardRows<float> fn = pick_backward<float>(act);
  const std::vector<float> af = widen(a, n * C), bf = widen(b, n * C);
  const int64_t K = backward_chunks(rows, C, n);
  const int64_t nc = n * C;
  std::vector<float> acc(static_cast<size_t>(K * 2 * nc), 0.0f);
  at::parallel_for(0, K, 1, [&](int64_t k0, int64_t k1) {
    std::vector<float> dys(static_cast<size_t>(C)), xs(static_cast<size_t>(C)),
        dxs(static_cast<size_t>(C));
    for (int64_t k = k0; k < k1; ++k) {
      float* S = acc.data() + k * 2 * nc;
      for (int64_t r = rows * k / K; r < rows * (k + 1) / K; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          dys[c] = static_cast<float>(dy[r * C + c]);
          xs[c] = static_cast<float>(x[r * C + c]);
        }
        fn(dys.data(), xs.data(), af.data(), bf.data(), dxs.data(), S, S + nc, 1, C, n);
        for (int64_t c = 0; c < C; ++c) dx[r * C + c] = c10::BFloat16(dxs[c]);
      }
    }
  });
  for (int64_t j = 0; j < nc; ++j) {
    float s = 0, p = 0;
    for (int64_t k = 0; k < K; ++k) {
      s += acc[k * 2 * nc + j];
      p += acc[k * 2 * nc + nc + j];
    }
    da[j] = c10::BFloat16(s);
    db[j] = c10::BFloat16(af[j] * p);
  }
}

bool siaf_uses_avx2() { return cpu_has_avx2(); }

}  // namespace concord::kernels::cpu
