// Loads every tensor of a safetensors file with concord::io::SafetensorsFile and sums each one
// (so every byte is touched), then prints one JSON line:
//   {"seconds": open + get + sum, "get_seconds": open + get only, "tensors": n,
//    "zero_copy": tensors that view the mapping, "bytes": data bytes, "checksum": sum of sums,
//    "sum_again_seconds": a second pass of sums over the now-mapped pages (compute alone),
//    "minor_faults": page faults taken by the timed load}
// benchmarks/bench_safetensors_load.py runs it beside Python's safetensors on the same file and
// reports the ratio; it is not a Google Benchmark because the baseline lives in another process.
//
// Usage: bench_safetensors_load --file model.safetensors
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/io/safetensors.h"

#include "bench_flags.h"

int main(int argc, char** argv) {
  std::string file;
  concord::bench::Flags flags("bench_safetensors_load");
  flags.add("file", &file);
  if (!flags.parse(argc, argv)) return 2;
  if (file.empty()) {
    std::fprintf(stderr, "bench_safetensors_load: --file PATH.safetensors is needed\n%s\n",
                 flags.usage().c_str());
    return 2;
  }
  try {
    concord::init_runtime();  // LibTorch's intra-op threads = cores, as Python's torch has
    // Warm LibTorch up (kernel dispatch, the intra-op thread pool) outside the timer, as the
    // Python side's long-lived process already is: the timer should see loading, not start-up.
    (void)at::ones({1 << 22}).sum().item<float>();
    using clock = std::chrono::steady_clock;
    auto minor_faults = [] {
      rusage usage{};
      getrusage(RUSAGE_SELF, &usage);
      return static_cast<long long>(usage.ru_minflt);
    };
    const long long faults_before = minor_faults();
    auto start = clock::now();
    concord::io::SafetensorsFile st(file);
    std::vector<at::Tensor> tensors;
    int zero_copy = 0;
    uint64_t bytes = 0;
    for (const auto& name : st.keys()) {
      tensors.push_back(st.get(name));
      zero_copy += st.is_zero_copy(name) ? 1 : 0;
      bytes += st.info(name).nbytes();
    }
    double get_seconds = std::chrono::duration<double>(clock::now() - start).count();
    double checksum = 0;
    for (const auto& t : tensors) checksum += t.sum().item<double>();
    double seconds = std::chrono::duration<double>(clock::now() - start).count();
    const long long faults = minor_faults() - faults_before;
    // A second pass over the same tensors: the pages are mapped now, so this is the sum alone.
    auto again = clock::now();
    double checksum_again = 0;
    for (const auto& t : tensors) checksum_again += t.sum().item<double>();
    double sum_again_seconds = std::chrono::duration<double>(clock::now() - again).count();
    std::printf(
        "{\"seconds\": %.6f, \"get_seconds\": %.6f, \"tensors\": %zu, \"zero_copy\": %d, "
        "\"bytes\": %llu, \"checksum\": %.17g, \"sum_again_seconds\": %.6f, "
        "\"checksum_again\": %.17g, \"minor_faults\": %lld}\n",
        seconds, get_seconds, tensors.size(), zero_copy, static_cast<unsigned long long>(bytes),
        checksum, sum_again_seconds, checksum_again, faults);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_safetensors_load: %s\n", concord::one_line_message(e).c_str());
    return 1;
  }
  return 0;
}
