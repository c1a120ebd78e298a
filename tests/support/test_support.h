// Helpers shared by every test binary: temporary folders, fixture paths, the TUMLU data path.
#pragma once
#include <ATen/core/Tensor.h>

#include <filesystem>
#include <string>

namespace concord::testing {

/// A fresh folder under the system temp dir, removed when the object goes out of scope.
/// Tests write only here (CI mounts ../shared read-only).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// The source tree and the build folder. Only test_support.cpp sees them as compile definitions:
/// an absolute path in every test's command line would make each new clone miss ccache.
std::filesystem::path source_dir();
std::filesystem::path binary_dir();

/// tests/fixtures/<name> in the source tree (committed fixtures made by scripts/fixtures/*.py).
std::filesystem::path fixture(const std::string& name);

/// The shared data folder: $CONCORD_SHARED_DIR, else ../shared beside the checkout.
std::filesystem::path shared_dir();

/// TUMLU-mini: $CONCORD_TUMLU_DIR, else <shared_dir>/data/tumlu-mini. Empty path if absent.
std::filesystem::path tumlu_dir();

/// Writes `text` to `path` (creating parents); returns the path.
std::filesystem::path write_file(const std::filesystem::path& path, const std::string& text);

/// max |a - b| over all elements, in double precision: the parity tests' measure.
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);

/// True when a CUDA device is usable from LibTorch.
bool cuda_available();

}  // namespace concord::testing

/// First statement of every *_CUDA test: skips it when no device is present.
#define CONCORD_REQUIRE_CUDA()                                      \
  do {                                                              \
    if (!::concord::testing::cuda_available()) {                    \
      GTEST_SKIP() << "no CUDA device: this test needs one";        \
    }                                                               \
  } while (0)
