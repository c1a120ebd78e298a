#include "concord/data/fortune.h"

#include <algorithm>
#include <fstream>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace concord::data {

namespace fs = std::filesystem;

namespace {

void split_entries(const std::string& text, std::vector<std::string>& out) {
  std::string entry;
  size_t pos = 0;
  auto flush = [&] {
    const size_t b = entry.find_first_not_of("\n\r \t");
    const size_t e = entry.find_last_not_of("\n\r \t");
    if (b != std::string::npos) out.push_back(entry.substr(b, e - b + 1));
    entry.clear();
  };
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line == "%") {
      flush();
    } else {
      entry += line;
      entry += '\n';
    }
    pos = end + 1;
  }
  flush();
}

}  // namespace

std::vector<std::string> read_fortunes(const fs::path& path) {
  std::vector<std::string> out;
  if (fs::is_regular_file(path)) {
    split_entries(read_file(path), out);
    return out;
  }
  CONCORD_CHECK(fs::is_directory(path), path.string(),
                ": no such fortune file or folder (Debian: apt-get install fortunes)");
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (entry.is_symlink() || !entry.is_regular_file()) continue;
    if (entry.path().has_extension()) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  CONCORD_CHECK(!files.empty(), path.string(), ": no fortune files in this folder");
  for (const auto& f : files) split_entries(read_file(f), out);
  return out;
}

}  // namespace concord::data
