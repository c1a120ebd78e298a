// Process start-up shared by drivers, tests and benchmarks.
#pragma once
#include <cstdint>
#include <string>

#include <c10/core/Device.h>

namespace concord {

/// Sets LibTorch's intra-op thread count to the machine's cores (it defaults to 1 on Debian's
/// build) unless CONCORD_NUM_THREADS or OMP_NUM_THREADS says otherwise, sizes OpenBLAS's own
/// pool (when LibTorch uses it) to match, keeps freed large blocks in glibc's heap for reuse
/// (CONCORD_MALLOC=system opts out; see runtime.cpp), and sets up logging. The CLI, tests and
/// benchmarks call it; a program embedding the library chooses whether to. Safe to call more
/// than once.
void init_runtime();

/// Physical parallelism available to this process (sched affinity, not the host's core count).
int available_cores();

/// Seeds LibTorch's CPU (and CUDA, when present) generators. Concord's own std engines
/// (samplers, shuffles, corpus generators) take explicit seeds from the run config instead of a
/// global engine, so a component's randomness never depends on what ran before it.
void seed_everything(uint64_t seed);

/// "cpu", "cuda", "cuda:1" or "auto" (CUDA if there is a device, else CPU). `cuda` and `auto`
/// name device 0, or in a job of several processes (WORLD_SIZE > 1) device LOCAL_RANK, each
/// process its own GPU.
c10::Device select_device(const std::string& spec);

}  // namespace concord
