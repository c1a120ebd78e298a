// Which instruction-set build of the fp32 CPU kernels runs. The kernels are compiled for the
// baseline ISA and again inside target("avx2,fma") / target("avx512f,...") functions; the build
// is picked per call from the best the CPU supports, capped by the environment variable
// CONCORD_CPU_ISA (baseline | avx2 | avx512, read once) and by set_cpu_isa_cap (tests use it to
// run every build on one machine and compare them).
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

enum class CpuIsa : int32_t { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

/// The build the fp32 kernels use now: min(best supported, CONCORD_CPU_ISA, cap).
CpuIsa cpu_isa();
/// The best build this CPU (and this compiler) supports, capped by CONCORD_CPU_ISA but not by
/// set_cpu_isa_cap.
CpuIsa cpu_isa_supported();
/// Caps cpu_isa() (process-wide; kAvx512 removes the cap). Returns the previous cap.
CpuIsa set_cpu_isa_cap(CpuIsa cap);
/// "baseline", "avx2" or "avx512".
const char* cpu_isa_name(CpuIsa isa);

}  // namespace concord::kernels::cpu

// A kernel's AVX2 and AVX-512 builds are GCC target("...") functions on x86 (name_avx2,
// name_avx512 beside name_base); elsewhere only the baseline build exists.
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define CONCORD_CPU_X86_VARIANTS 1
#endif

/// `return name_avx512(args...)`, `name_avx2(args...)` or `name_base(args...)`, whichever
/// cpu_isa() picks: the last statement of a function that runs one build of a kernel.
#ifdef CONCORD_CPU_X86_VARIANTS
#define CONCORD_CPU_DISPATCH(name, ...)              \
  switch (::concord::kernels::cpu::cpu_isa()) {      \
    case ::concord::kernels::cpu::CpuIsa::kAvx512:   \
      return name##_avx512(__VA_ARGS__);             \
    case ::concord::kernels::cpu::CpuIsa::kAvx2:     \
      return name##_avx2(__VA_ARGS__);               \
    case ::concord::kernels::cpu::CpuIsa::kBaseline: \
      break;                                         \
  }                                                  \
  return name##_base(__VA_ARGS__)
#else
#define CONCORD_CPU_DISPATCH(name, ...) return name##_base(__VA_ARGS__)
#endif
