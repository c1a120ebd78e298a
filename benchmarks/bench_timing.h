// Timing helpers shared by the benchmarks: the median of samples, and the median wall time of a
// callable after one warm-up.
#pragma once
#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

namespace concord::bench {

/// The median of samples (the upper one of an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median of `iters` timed calls of `f`, in milliseconds, after one untimed warm-up call (first
/// touch of buffers, thread-pool start).
template <class F>
double median_ms(F&& f, int iters) {
  f();
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  return median(std::move(times));
}

}  // namespace concord::bench
