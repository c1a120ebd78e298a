// The BLAS that Debian's LibTorch calls: OpenBLAS's OpenMP build wherever the machine has it
// (cmake/ConcordDependencies.cmake puts it first on every Concord binary's RPATH), so OpenBLAS
// works on LibTorch's own OpenMP pool instead of a pthread pool of its own that spins against it
// (issue 18, docs/benchmarks.md).
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <filesystem>

#include <ATen/ATen.h>

TEST(Runtime, OpenBlasRunsOnLibTorchsOpenMpPool) {
  at::mm(at::ones({4, 4}), at::ones({4, 4}));  // LibTorch and its BLAS are loaded and used
  using GetParallel = int (*)();
  const auto get = reinterpret_cast<GetParallel>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  if (get == nullptr) GTEST_SKIP() << "this LibTorch does not call OpenBLAS (the pip wheel's MKL)";
  if (!std::filesystem::exists("/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0")) {
    GTEST_SKIP() << "libopenblas0-openmp is not installed";
  }
  EXPECT_EQ(get(), 2) << "openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP";
}
