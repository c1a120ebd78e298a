#include "test_support.h"

#include <torch/cuda.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <stdexcept>

namespace fs = std::filesystem;

namespace concord::testing {

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

fs::path source_dir() { return CONCORD_SOURCE_DIR; }

fs::path binary_dir() { return CONCORD_BINARY_DIR; }

fs::path fixture(const std::string& name) { return fs::path(CONCORD_FIXTURES_DIR) / name; }

fs::path shared_dir() {
  if (const char* env = std::getenv("CONCORD_SHARED_DIR"); env && *env) return env;
  return fs::path(CONCORD_SOURCE_DIR).parent_path() / "shared";
}

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

bool cuda_available() { return torch::cuda::is_available(); }

}  // namespace concord::testing
