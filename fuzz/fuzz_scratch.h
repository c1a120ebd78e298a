// A fuzz target's scratch folder for the files a parser reads from disk: one per process under
// the system temp dir, removed when the process exits normally (a crash leaves it for a look).
#pragma once
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace concord::fuzz {

struct Scratch {
  std::filesystem::path dir;
  explicit Scratch(const std::string& name) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (name + ".XXXXXX")).string();
    if (!mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

}  // namespace concord::fuzz
