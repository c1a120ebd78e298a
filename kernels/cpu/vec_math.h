// Math for the fused CPU kernels: fp32 on explicit vectors (GCC vector extensions) of 8 lanes
// (`vf`, SSE2 pairs or AVX2) or 16 lanes (`vf16`, AVX-512), fp64 on scalars with libm.
//
// Why explicit vectors: with the default -ftrapping-math, gcc refuses to if-convert loops whose
// branches hold floating-point arithmetic, and it creates such branches itself from a clamp
// followed by arithmetic (it folds the constant arm), so an auto-vectorised exp never happens.
// Vector-extension code compiles to whatever the enclosing function's target allows: 8-lane
// vectors become AVX2 inside target("avx2,fma") functions and pairs of SSE2 operations
// elsewhere; 16-lane vectors become AVX-512 inside target("avx512f,...") functions. Every helper
// is a template over the vector type and always_inline, so it is compiled for its caller's ISA.
//
// exp: Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, then the classic degree-6
//      single-precision minimax polynomial for e^r; ~2 ulp on [-87, 88]. `exp_core` skips the
//      clamps for callers whose argument is already inside that range.
// erfc: Abramowitz & Stegun 7.1.26, |error| < 1.5e-7; its e^{-z^2} is shared with the Gaussian
//      pdf that GELU's derivative needs, so GELU's value and gradient cost one exp.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__)
#define CONCORD_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CONCORD_ALWAYS_INLINE inline
#endif

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // the vectors never cross a non-inlined call

namespace concord::kernels::cpu::vmath {

template <int W>
struct VecOf {
  typedef float f __attribute__((vector_size(4 * W)));
  typedef int32_t i __attribute__((vector_size(4 * W)));
};
using vf4 = VecOf<4>::f;    ///< 4 fp32 lanes: SSE2 (the x86-64 baseline), NEON
using vf = VecOf<8>::f;     ///< 8 fp32 lanes: AVX2 (or two baseline registers)
using vi = VecOf<8>::i;
using vf16 = VecOf<16>::f;  ///< 16 fp32 lanes: AVX-512

template <class V>
struct IntVec;
template <>
struct IntVec<vf4> {
  using type = VecOf<4>::i;
};
template <>
struct IntVec<vf> {
  using type = VecOf<8>::i;
};
template <>
struct IntVec<vf16> {
  using type = VecOf<16>::i;
};

/// Number of fp32 lanes of vector type V.
template <class V>
constexpr int64_t lanes() {
  return static_cast<int64_t>(sizeof(V) / sizeof(float));
}
constexpr int64_t kLanes = lanes<vf>();

template <class V = vf>
CONCORD_ALWAYS_INLINE V splat(float c) {
  return V{} + c;
}

template <class V = vf>
CONCORD_ALWAYS_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <class V>
CONCORD_ALWAYS_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}
/// Sum of the lanes, first to last.
template <class V>
CONCORD_ALWAYS_INLINE float hsum(V v) {
  float s = 0;
  for (int64_t i = 0; i < lanes<V>(); ++i) s += v[i];
  return s;
}
/// The first `count` (< lanes) lanes from p, zeros after.
template <class V = vf>
CONCORD_ALWAYS_INLINE V load_partial(const float* p, int64_t count) {
  V v = V{};
  std::memcpy(&v, p, static_cast<size_t>(count) * sizeof(float));
  return v;
}
template <class V>
CONCORD_ALWAYS_INLINE void store_partial(float* p, V v, int64_t count) {
  std::memcpy(p, &v, static_cast<size_t>(count) * sizeof(float));
}
/// `count` (<= lanes) lanes from p, zeros after; count == lanes, the hot case, is one vector load.
template <class V>
CONCORD_ALWAYS_INLINE V load_n(int64_t count, const float* p) {
  return count == lanes<V>() ? load<V>(p) : load_partial<V>(p, count);
}
/// The first `count` (<= lanes) lanes of v to p.
template <class V>
CONCORD_ALWAYS_INLINE void store_n(int64_t count, float* p, V v) {
  if (count == lanes<V>()) {
    store(p, v);
  } else {
    store_partial(p, v, count);
  }
}

/// e^x for x already in [-87.33, 88.37] (NaN propagates).
template <class V>
CONCORD_ALWAYS_INLINE V exp_core(V x) {
  using I = typename IntVec<V>::type;
  // Round x*log2(e) to nearest with the 1.5*2^23 trick (plain add/sub, SSE2-friendly).
  const V shifter = splat<V>(12582912.0f);
  V k = (x * splat<V>(1.44269504088896341f) + shifter) - shifter;
  V r = x - k * splat<V>(0.693359375f);
  r = r - k * splat<V>(-2.12194440e-4f);
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + splat<V>(1.3981999507e-3f);
  p = p * r + splat<V>(8.3334519073e-3f);
  p = p * r + splat<V>(4.1665795894e-2f);
  p = p * r + splat<V>(1.6666665459e-1f);
  p = p * r + splat<V>(5.0000001201e-1f);
  p = p * r * r + r + splat<V>(1.0f);
  I bits = (__builtin_convertvector(k, I) + 127) << 23;
  return p * (V)bits;
}

template <class V>
CONCORD_ALWAYS_INLINE V exp(V x) {
  // Comparisons are false for NaN, so NaN passes through to the result.
  x = x > splat<V>(88.3762626647949f) ? splat<V>(88.3762626647949f) : x;
  x = x < splat<V>(-87.3365447504019f) ? splat<V>(-87.3365447504019f) : x;
  return exp_core(x);
}

// ---- activations: value(u) and value_grad(u, v, g) with g = d sigma / du -------------------
// Each has a vector form (any lane count) and an fp64 scalar form (libm, for gradient checks).

struct SiLU {
  template <class V>
  static CONCORD_ALWAYS_INLINE V sigmoid(V u) {
    // -u clamped to [-80, 80] so that 1/(1+e^{-u}) stays a normal number (denormals cost ~100x
    // on x86); inside exp's range, so exp_core needs no clamps of its own.
    V t = -u;
    t = t > splat<V>(80.0f) ? splat<V>(80.0f) : t;
    t = t < splat<V>(-80.0f) ? splat<V>(-80.0f) : t;
    return splat<V>(1.0f) / (splat<V>(1.0f) + exp_core(t));
  }
  template <class V>
  static CONCORD_ALWAYS_INLINE V value(V u) {
    return u * sigmoid(u);
  }
  template <class V>
  static CONCORD_ALWAYS_INLINE void value_grad(V u, V& v, V& g) {
    V s = sigmoid(u);
    v = u * s;
    g = s * (splat<V>(1.0f) + u * (splat<V>(1.0f) - s));
  }
  static CONCORD_ALWAYS_INLINE double value(double u) { return u / (1.0 + std::exp(-u)); }
  static CONCORD_ALWAYS_INLINE void value_grad(double u, double& v, double& g) {
    double s = 1.0 / (1.0 + std::exp(-u));
    v = u * s;
    g = s * (1.0 + u * (1.0 - s));
  }
};

struct GELU {
  // Phi(u) = 0.5 erfc(-u / sqrt 2); phi(u) = e^{-u^2/2} / sqrt(2 pi).
  template <class V>
  static CONCORD_ALWAYS_INLINE void cdf_pdf(V u, V& cdf, V& pdf) {
    V z = u * splat<V>(0.70710678118654752f);
    V az = z < splat<V>(0.0f) ? -z : z;
    // -z^2 <= 0: only the lower clamp of exp is needed (it also maps -inf to a tiny value).
    V nz2 = -(az * az);
    nz2 = nz2 < splat<V>(-87.3365447504019f) ? splat<V>(-87.3365447504019f) : nz2;
    V gauss = exp_core(nz2);
    V t = splat<V>(1.0f) / (splat<V>(1.0f) + splat<V>(0.3275911f) * az);
    V poly = splat<V>(1.061405429f);
    poly = poly * t - splat<V>(1.453152027f);
    poly = poly * t + splat<V>(1.421413741f);
    poly = poly * t - splat<V>(0.284496736f);
    poly = poly * t + splat<V>(0.254829592f);
    V half_erfc = splat<V>(0.5f) * poly * t * gauss;  // 0.5 erfc(|z|), no cancellation
    cdf = z < splat<V>(0.0f) ? half_erfc : splat<V>(1.0f) - half_erfc;
    pdf = gauss * splat<V>(0.39894228040143268f);
  }
  template <class V>
  static CONCORD_ALWAYS_INLINE V value(V u) {
    V cdf, pdf;
    cdf_pdf(u, cdf, pdf);
    return u * cdf;
  }
  template <class V>
  static CONCORD_ALWAYS_INLINE void value_grad(V u, V& v, V& g) {
    V cdf, pdf;
    cdf_pdf(u, cdf, pdf);
    v = u * cdf;
    g = cdf + u * pdf;
  }
  static CONCORD_ALWAYS_INLINE double value(double u) {
    return u * 0.5 * std::erfc(-u * 0.70710678118654752440);
  }
  static CONCORD_ALWAYS_INLINE void value_grad(double u, double& v, double& g) {
    const double cdf = 0.5 * std::erfc(-u * 0.70710678118654752440);
    v = u * cdf;
    g = cdf + u * std::exp(-0.5 * u * u) * 0.39894228040143267794;
  }
};

struct ReLU {
  template <class V>
  static CONCORD_ALWAYS_INLINE V value(V u) {
    return u < splat<V>(0.0f) ? splat<V>(0.0f) : u;
  }
  template <class V>
  static CONCORD_ALWAYS_INLINE void value_grad(V u, V& v, V& g) {
    v = u < splat<V>(0.0f) ? splat<V>(0.0f) : u;          // NaN passes through, as torch.relu
    g = u > splat<V>(0.0f) ? splat<V>(1.0f) : splat<V>(0.0f);  // 0 at u == 0, as threshold_backward
  }
  static CONCORD_ALWAYS_INLINE double value(double u) { return u < 0.0 ? 0.0 : u; }
  static CONCORD_ALWAYS_INLINE void value_grad(double u, double& v, double& g) {
    v = u < 0.0 ? 0.0 : u;
    g = u > 0.0 ? 1.0 : 0.0;
  }
};

}  // namespace concord::kernels::cpu::vmath

#pragma GCC diagnostic pop
