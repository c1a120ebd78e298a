// Run-time choice of the fp32 kernel builds (see cpu_isa.h).
#include "cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace concord::kernels::cpu {
namespace {

CpuIsa detect() {
#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return CpuIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kBaseline;
}

CpuIsa from_env() {
  const char* v = std::getenv("CONCORD_CPU_ISA");
  if (v == nullptr || *v == '\0') return CpuIsa::kAvx512;
  if (std::strcmp(v, "baseline") == 0) return CpuIsa::kBaseline;
  if (std::strcmp(v, "avx2") == 0) return CpuIsa::kAvx2;
  return CpuIsa::kAvx512;  // "avx512" or anything else: no cap
}

std::atomic<int32_t> g_cap{static_cast<int32_t>(CpuIsa::kAvx512)};

CpuIsa lower(CpuIsa a, CpuIsa b) { return static_cast<int32_t>(a) < static_cast<int32_t>(b) ? a : b; }

}  // namespace

CpuIsa cpu_isa_supported() {
  static const CpuIsa isa = lower(detect(), from_env());
  return isa;
}

CpuIsa cpu_isa() {
  return lower(cpu_isa_supported(), static_cast<CpuIsa>(g_cap.load(std::memory_order_relaxed)));
}

CpuIsa set_cpu_isa_cap(CpuIsa cap) {
  return static_cast<CpuIsa>(g_cap.exchange(static_cast<int32_t>(cap)));
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kBaseline: return "baseline";
    case CpuIsa::kAvx2: return "avx2";
    case CpuIsa::kAvx512: return "avx512";
  }
  return "?";
}

}  // namespace concord::kernels::cpu
