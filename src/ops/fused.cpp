// The fused-ops switch (include/concord/ops/fused.h) and the output allocation of the fused CPU
// paths (src/ops/output.h).
#include "concord/ops/fused.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "output.h"

namespace concord::ops {
namespace {

std::atomic<bool> g_fused{true};

// CONCORD_HUGEPAGES=0 turns the huge-page advice off (read once).
bool hugepages_wanted() {
  static const bool wanted = [] {
    const char* v = std::getenv("CONCORD_HUGEPAGES");
    return v == nullptr || std::strcmp(v, "0") != 0;
  }();
  return wanted;
}

}  // namespace

void set_fused_ops_enabled(bool enabled) { g_fused.store(enabled, std::memory_order_relaxed); }
bool fused_ops_enabled() { return g_fused.load(std::memory_order_relaxed); }

namespace detail {

void advise_huge_pages(const at::Tensor& t) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  // Only where glibc gives the block a mapping of its own: at 32 MiB and above (its largest
  // dynamic mmap threshold on 64-bit). Below that, once a freed block has raised the threshold,
  // the block comes from the heap; advised heap memory that malloc trims and reuses fragments
  // into pages the kernel must compact on every later huge-page fault, and a 21 MB GEGLU output
  // took 33-66 ms instead of 5 (bench_ops_geglu; MALLOC_MMAP_THRESHOLD_=4194304 cured it).
  constexpr uintptr_t kOwnMapping = uintptr_t(32) << 20;
  if (!t.device().is_cpu() || t.nbytes() < kOwnMapping || !hugepages_wanted()) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + t.nbytes()) & ~(kHuge - 1);
  // Advice only: an error (an old kernel, THP compiled out) leaves ordinary pages.
  if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#else
  (void)t;
#endif
}

at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  advise_huge_pages(t);
  return t;
}

at::Tensor empty_output_like(const at::Tensor& like) {
  return empty_output(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
}

}  // namespace detail
}  // namespace concord::ops
