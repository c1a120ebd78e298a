#include "test_support.h"

#include <ATen/ATen.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

namespace fs = std::filesystem;

namespace concord::testing {

namespace detail {
std::filesystem::path built_source_dir();  // build_paths.cpp
std::filesystem::path built_binary_dir();
}  // namespace detail

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    fs::path candidate = fs::temp_directory_path() / ("concord-test-" + std::to_string(rd()));
    std::error_code ec;
    if (fs::create_directory(candidate, ec)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("TempDir: could not create a temporary folder");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

// The value of an environment variable, or `fallback` when it is unset or empty.
fs::path env_or(const char* name, const fs::path& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? fs::path(value) : fallback;
}

}  // namespace

// The paths compiled in are where the tests were built; CONCORD_TEST_SOURCE_DIR and
// CONCORD_TEST_BINARY_DIR move them, for test binaries run on another machine over a checkout
// at another path (scripts/gpu-check.sh runs a bundle built elsewhere on the GPU machine).
fs::path source_dir() { return env_or("CONCORD_TEST_SOURCE_DIR", detail::built_source_dir()); }

fs::path binary_dir() { return env_or("CONCORD_TEST_BINARY_DIR", detail::built_binary_dir()); }

fs::path fixture(const std::string& name) { return source_dir() / "tests" / "fixtures" / name; }

fs::path shared_dir() { return env_or("CONCORD_SHARED_DIR", source_dir().parent_path() / "shared"); }

fs::path tumlu_dir() {
  fs::path dir;
  if (const char* env = std::getenv("CONCORD_TUMLU_DIR"); env && *env) {
    dir = env;
  } else {
    dir = shared_dir() / "data" / "tumlu-mini";
  }
  return fs::is_directory(dir) ? dir : fs::path();
}

fs::path write_file(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
  if (!out) throw std::runtime_error("write_file: cannot write " + path.string());
  return path;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

bool cuda_available() { return torch::cuda::is_available(); }

}  // namespace concord::testing
