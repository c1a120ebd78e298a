// Device helpers shared by the ops benchmarks: the --device flag, timing that waits for the
// device, and the device-to-device copy bandwidth that elementwise kernels are measured against.
#pragma once
#include <string>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "bench_timing.h"

namespace concord::bench {

/// "cpu" or "cuda" (device 0). Returns false (and leaves dev alone) for "cuda" without a device.
inline bool parse_device(const std::string& name, torch::Device& dev) {
  if (name == "cuda") {
    if (!torch::cuda::is_available()) return false;
    dev = torch::Device(torch::kCUDA, 0);
  } else {
    dev = torch::Device(torch::kCPU);
  }
  return true;
}

inline torch::Dtype parse_dtype(const std::string& name) {
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  if (name == "half" || name == "float16" || name == "fp16") return torch::kHalf;
  if (name == "double") return torch::kDouble;
  return torch::kFloat;
}

inline void sync(const torch::Device& dev) {
  if (dev.is_cuda()) torch::cuda::synchronize();
}

/// Median milliseconds per call of f: each sample runs f `inner` times and waits for the device
/// (kernels of a few microseconds are timed in batches, so launch latency does not dominate).
template <class F>
double median_ms_on(const torch::Device& dev, F&& f, int iters, int inner = 1) {
  sync(dev);
  return median_ms(
             [&] {
               for (int i = 0; i < inner; ++i) f();
               sync(dev);
             },
             iters) /
         inner;
}

/// Bytes read + written per second by dst.copy_(src) over `bytes` bytes, in GB/s: the memory
/// bandwidth an elementwise kernel can reach on this device (HBM on a GPU).
inline double copy_bandwidth_gbs(const torch::Device& dev, int64_t bytes = int64_t(1) << 30,
                                 int iters = 10) {
  auto src = torch::ones({bytes / 4}, torch::dtype(torch::kFloat).device(dev));
  auto dst = torch::empty_like(src);
  const double ms = median_ms_on(dev, [&] { dst.copy_(src); }, iters, dev.is_cuda() ? 5 : 1);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) * 1e-9;
}

}  // namespace concord::bench
