#include "concord/core/runtime.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <dlfcn.h>
#include <sched.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>

#include "concord/core/error.h"
#include "concord/core/logging.h"
#include "concord/core/shard.h"

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

// Debian's LibTorch calls OpenBLAS, whose pthread build keeps a pool of its own sized to the
// machine, and its idle threads spin in sched_yield between calls: left alone,
// CONCORD_NUM_THREADS=1 still ran two busy threads (a TUMLU loglik run: 17 of 44 CPU seconds in
// the kernel). The pool gets LibTorch's size. Looked up at run time, so MKL builds (no such
// symbol) and an explicit OPENBLAS_NUM_THREADS are left alone.
static void size_openblas_pool(int threads) {
  if (const char* v = std::getenv("OPENBLAS_NUM_THREADS"); v && *v) return;
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set(threads);
  }
}

// glibc serves every block over 32 MiB (logits, activations, KV caches, their gradients) with a
// fresh mmap and unmaps it on free, so each training step or scoring batch pays the first-touch
// page faults of its large tensors again (~10% of a GPT-2 training step; 13% of a TUMLU loglik
// run). Keeping freed memory in the heap makes the next step reuse it, as PyTorch's caching
// allocators do on GPUs. The cost: the process keeps its peak heap. CONCORD_MALLOC=system, or
// any of glibc's own MALLOC_* settings, leaves glibc's defaults.
static void keep_freed_memory() {
#if defined(__GLIBC__)
  for (const char* name : {"MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                           "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"}) {
    if (std::getenv(name) != nullptr) return;
  }
  if (const char* v = std::getenv("CONCORD_MALLOC"); v && std::string(v) == "system") return;
  mallopt(M_MMAP_MAX, 0);                      // large blocks from the heap too
  mallopt(M_TRIM_THRESHOLD, 1 << 30);          // only give back more than 1 GiB of free top
  mallopt(M_TOP_PAD, 64 << 20);                // grow the heap in 64 MiB steps
#endif
}

void init_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    int threads = env_threads();
    if (threads == 0) threads = available_cores();
    at::set_num_threads(threads);
    size_openblas_pool(threads);
    keep_freed_memory();
    init_logging();
  });
}

void seed_everything(uint64_t seed) {
  torch::manual_seed(seed);
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

c10::Device select_device(const std::string& spec) {
  if (spec == "auto") return torch::cuda::is_available() ? select_device("cuda") : c10::Device(c10::kCPU);
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(spec);
  } catch (const std::exception&) {
    fail("device: expected cpu, cuda, cuda:N or auto, got '", spec, "'");
  }
  if (!device.is_cuda()) return device;
  CONCORD_CHECK(torch::cuda::is_available(), "device '", spec,
                "' asked for, but this LibTorch sees no CUDA device");
  // In a job of several processes, `cuda` (and `auto`) is this process's own GPU,
  // cuda:LOCAL_RANK, as torchrun's workers take it; an explicit cuda:N is taken as written.
  const Shard shard = process_shard();
  if (!device.has_index()) {
    device = c10::Device(c10::kCUDA,
                         static_cast<c10::DeviceIndex>(shard.world_size > 1 ? shard.local_rank : 0));
  }
  CONCORD_CHECK(device.index() < int(torch::cuda::device_count()), "device '", spec, "'",
                shard.world_size > 1 ? " (LOCAL_RANK " + std::to_string(shard.local_rank) + ")" : "",
                ": this machine has ", torch::cuda::device_count(), " CUDA device(s)");
  return device;
}

}  // namespace concord
