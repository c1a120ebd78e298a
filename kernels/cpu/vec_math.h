// Math for the fused CPU kernels: fp32 on explicit 8-lane vectors (GCC/Clang vector extensions),
// fp64 on scalars with libm.
//
// Why explicit vectors: with the default -ftrapping-math, gcc refuses to if-convert loops whose
// branches hold floating-point arithmetic, and it creates such branches itself from a clamp
// followed by arithmetic (it folds the constant arm), so an auto-vectorised exp never happens.
// Vector-extension code compiles to 8-wide AVX2 inside target("avx2,fma") functions and to pairs
// of SSE2 operations elsewhere, with no dependence on the optimiser's mood.
//
// exp: Cody-Waite range reduction x = k ln2 + r, |r| <= ln2/2, then the classic degree-6
//      single-precision minimax polynomial for e^r; ~2 ulp on [-87, 88].
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

constexpr int64_t kLanes = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));

CONCORD_ALWAYS_INLINE vf splat(float c) { return vf{} + c; }

CONCORD_ALWAYS_INLINE vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
CONCORD_ALWAYS_INLINE void store(float* p, vf v) { std::memcpy(p, &v, sizeof(v)); }
/// The first `count` (< kLanes) lanes from p, zeros after.
CONCORD_ALWAYS_INLINE vf load_partial(const float* p, int64_t count) {
  vf v = vf{};
  std::memcpy(&v, p, static_cast<size_t>(count) * sizeof(float));
  return v;
}
CONCORD_ALWAYS_INLINE void store_partial(float* p, vf v, int64_t count) {
  std::memcpy(p, &v, static_cast<size_t>(count) * sizeof(float));
}

CONCORD_ALWAYS_INLINE vf exp(vf x) {
  // Comparisons are false for NaN, so NaN passes through to the result.
  x = x > splat(88.3762626647949f) ? splat(88.3762626647949f) : x;
  x = x < splat(-87.3365447504019f) ? splat(-87.3365447504019f) : x;
  // Round x*log2(e) to nearest with the 1.5*2^23 trick (plain add/sub, SSE2-friendly).
  const vf shifter = splat(12582912.0f);
  vf k = (x * splat(1.44269504088896341f) + shifter) - shifter;
  vf r = x - k * splat(0.693359375f);
  r = r - k * splat(-2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  p = p * r * r + r + splat(1.0f);
  vi bits = (__builtin_convertvector(k, vi) + 127) << 23;
  return p * (vf)bits;
}

// ---- activations: value(u) and value_grad(u, v, g) with g = d sigma / du -------------------
// Each has an fp32 vector form and an fp64 scalar form (libm, for gradient checks).

struct SiLU {
  static CONCORD_ALWAYS_INLINE vf sigmoid(vf u) {
    // Clamped so that 1/(1+e^{-u}) stays a normal number: denormals cost ~100x on x86.
    vf t = -u;
    t = t > splat(80.0f) ? splat(80.0f) : t;
    t = t < splat(-80.0f) ? splat(-80.0f) : t;
    return splat(1.0f) / (splat(1.0f) + exp(t));
  }
  static CONCORD_ALWAYS_INLINE vf value(vf u) { return u * sigmoid(u); }
  static CONCORD_ALWAYS_INLINE void value_grad(vf u, vf& v, vf& g) {
    vf s = sigmoid(u);
    v = u * s;
    g = s * (splat(1.0f) + u * (splat(1.0f) - s));
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
  static CONCORD_ALWAYS_INLINE void cdf_pdf(vf u, vf& cdf, vf& pdf) {
    vf z = u * splat(0.70710678118654752f);
    vf az = z < splat(0.0f) ? -z : z;
    vf gauss = exp(-(az * az));
    vf t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * az);
    vf poly = splat(1.061405429f);
    poly = poly * t - splat(1.453152027f);
    poly = poly * t + splat(1.421413741f);
    poly = poly * t - splat(0.284496736f);
    poly = poly * t + splat(0.254829592f);
    vf half_erfc = splat(0.5f) * poly * t * gauss;  // 0.5 erfc(|z|), no cancellation
    cdf = z < splat(0.0f) ? half_erfc : splat(1.0f) - half_erfc;
    pdf = gauss * splat(0.39894228040143268f);
  }
  static CONCORD_ALWAYS_INLINE vf value(vf u) {
    vf cdf, pdf;
    cdf_pdf(u, cdf, pdf);
    return u * cdf;
  }
  static CONCORD_ALWAYS_INLINE void value_grad(vf u, vf& v, vf& g) {
    vf cdf, pdf;
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
  static CONCORD_ALWAYS_INLINE vf value(vf u) { return u < splat(0.0f) ? splat(0.0f) : u; }
  static CONCORD_ALWAYS_INLINE void value_grad(vf u, vf& v, vf& g) {
    v = u < splat(0.0f) ? splat(0.0f) : u;  // NaN passes through, as torch.relu
    g = u > splat(0.0f) ? splat(1.0f) : splat(0.0f);  // 0 at u == 0, as threshold_backward
  }
  static CONCORD_ALWAYS_INLINE double value(double u) { return u < 0.0 ? 0.0 : u; }
  static CONCORD_ALWAYS_INLINE void value_grad(double u, double& v, double& g) {
    v = u < 0.0 ? 0.0 : u;
    g = u > 0.0 ? 1.0 : 0.0;
  }
};

}  // namespace concord::kernels::cpu::vmath

#pragma GCC diagnostic pop
