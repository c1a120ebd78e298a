// main() of test_ops in a CONCORD_OPS_ONLY build (cmake/ConcordOpsOnly.cmake): what
// tests/support/main.cpp does, without the foundation library (its logging needs spdlog).
// LibTorch's intra-op threads follow CONCORD_NUM_THREADS / OMP_NUM_THREADS, else the cores this
// process may run on; *_CUDA tests are filtered out when no device is present.
#include <sched.h>

#include <cstdlib>
#include <string>
#include <thread>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "test_support.h"

namespace {

int thread_count() {
  for (const char* name : {"CONCORD_NUM_THREADS", "OMP_NUM_THREADS"}) {
    if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  at::set_num_threads(thread_count());
  if (!concord::testing::cuda_available()) {
    std::string filter = ::testing::GTEST_FLAG(filter);
    if (filter.find("_CUDA") == std::string::npos) {
      // Two appends (not one operator+ chain): gcc 12 -O3 warns falsely about the latter.
      filter.append(filter.find('-') == std::string::npos ? "-" : ":");
      filter.append("*_CUDA*");
    }
    ::testing::GTEST_FLAG(filter) = filter;
  }
  return RUN_ALL_TESTS();
}
