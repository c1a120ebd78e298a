#include "concord/core/runtime.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <sched.h>

#include <cstdlib>
#include <mutex>
#include <thread>

#include "concord/core/error.h"
#include "concord/core/logging.h"

namespace concord {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

static int env_threads() {
  for (const char* name : {"CONCORD_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(name); v && *v) {
      int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 0;
}

void init_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    int threads = env_threads();
    if (threads == 0) threads = available_cores();
    at::set_num_threads(threads);
    init_logging();
  });
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

c10::Device select_device(const std::string& spec) {
  if (spec == "auto") {
    return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(spec);
  } catch (const std::exception&) {
    fail("device: expected cpu, cuda, cuda:N or auto, got '", spec, "'");
  }
  if (device.is_cuda()) {
    CONCORD_CHECK(torch::cuda::is_available(), "device '", spec,
                  "' asked for, but this LibTorch sees no CUDA device");
    CONCORD_CHECK(!device.has_index() || device.index() < int(torch::cuda::device_count()),
                  "device '", spec, "': only ", torch::cuda::device_count(), " CUDA device(s)");
  }
  return device;
}

}  // namespace concord
