// The main() of every test binary: sets LibTorch's thread count the way the drivers do and
// skips *_CUDA tests when no device is present.
#include <gtest/gtest.h>

#include "concord/core/runtime.h"
#include "test_support.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  concord::init_runtime();
  if (!concord::testing::cuda_available()) {
    std::string filter = ::testing::GTEST_FLAG(filter);
    if (filter.find("_CUDA") == std::string::npos) {
      filter += (filter.find('-') == std::string::npos ? "-" : ":") + std::string("*_CUDA*");
    }
    ::testing::GTEST_FLAG(filter) = filter;
  }
  return RUN_ALL_TESTS();
}
