// One AdamW update of an fp32 parameter in a single pass over memory (ops/adamw.h states the
// rule): each element reads p, g, m, v and writes p, m, v once, 28 bytes, where the composite
// streams through memory six times.
//
// Vectorised (baseline SSE2, AVX2 or AVX-512 build, see cpu_isa.h) with the ISA's own square
// root: a scalar loop is bound by arithmetic, not memory (GPT-2 small's 124M parameters took
// 165 ms, now 44-64 ms: bench_train_step's median_phase_ms.optimizer), and gcc does not vectorise
// std::sqrt under the default -fmath-errno. Elements are split over at::parallel_for; each is
// computed the same way whatever the thread count.
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

struct AdamWScalars {
  float decay_factor = 1.0f;  ///< 1 - lr * lambda (1 for exempt parameters)
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float step_size = 0.0f;     ///< lr / (1 - beta1^k)
  float inv_sqrt_bc2 = 1.0f;  ///< 1 / sqrt(1 - beta2^k)
  float eps = 1e-8f;
};

/// p <- p * decay - step_size * m' / (sqrt(v') * inv_sqrt_bc2 + eps), with
/// m' = beta1 m + (1 - beta1) g and v' = beta2 v + (1 - beta2) g^2 written back to m and v.
void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s);

}  // namespace concord::kernels::cpu
