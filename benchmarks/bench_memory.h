// Memory figures of the benchmark's own process, read from /proc/self/status.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

#if CONCORD_BENCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace concord::bench {

/// A field of /proc/self/status ("VmRSS", "VmHWM", "RssFile", ...) in bytes (the kernel reports
/// kB); -1 when the field is absent.
inline int64_t status_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  const std::string key = std::string(field) + ":";
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  }
  return -1;
}

/// The most bytes LibTorch's CUDA caching allocator had handed out at once on device 0 (the
/// peak of torch.cuda.max_memory_allocated()); -1 in a build whose LibTorch has no CUDA.
inline int64_t cuda_peak_allocated_bytes() {
#if CONCORD_BENCH_CUDA
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)]
      .peak;
#else
  return -1;
#endif
}

}  // namespace concord::bench
