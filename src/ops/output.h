// Output allocation of the fused CPU ops (internal to src/ops).
//
// A fused kernel writes its output once, front to back, right after allocating it. For a large
// tensor the allocation is a fresh mmap, and on Linux with transparent huge pages in "madvise"
// mode (Debian's default) that first write takes one page fault per 4 KiB: on the 46 MB SIAF
// output of benchmarks/bench_ops_siaf.cpp, about 22 ms of page faults against ~6 ms of kernel on
// two threads. Advising MADV_HUGEPAGE on the 2 MiB-aligned interior before the first write turns
// 11k faults into ~23 (what PyTorch 2.x does for every large CPU allocation under
// THP_MEM_ALLOC_ENABLE=1). CONCORD_HUGEPAGES=0 turns the advice off.
#pragma once
#include <ATen/ATen.h>

namespace concord::ops::detail {

/// madvise(MADV_HUGEPAGE) over the 2 MiB pages inside t's bytes (CPU tensors of >= 32 MiB,
/// which glibc always maps on their own, Linux); a no-op elsewhere. Call before the first write.
void advise_huge_pages(const at::Tensor& t);

/// at::empty + advise_huge_pages.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);
/// A contiguous empty_output with like's sizes and options.
at::Tensor empty_output_like(const at::Tensor& like);

}  // namespace concord::ops::detail
