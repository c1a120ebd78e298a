// The layer rules of docs/architecture.md, checked on the source tree: a file includes Concord
// headers only from its own layer or below, library code never includes the umbrella header,
// kernels include no Concord header but concord/core's, and CUDA kernels no torch header. The
// CMake libraries catch most wrong arrows at link time (each test binary links only its layer's
// library); this catches the rest (inline and template code, headers that are only included) and
// names the file and line.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "test_support.h"

namespace {

namespace fs = std::filesystem;

const fs::path kRoot = ::concord::testing::source_dir();

// Module -> layer rank, bottom (0) to top; docs/architecture.md's diagram. Within the foundation
// (one library, concord_core) core sits below io and text, and data above them; nn below lm in
// concord_nn. Capabilities share a rank: none may include another.
const std::map<std::string, int> kRank = {
    {"core", 0},  {"io", 1},        {"text", 1},  {"plugins", 1}, {"data", 2},
    {"ops", 3},   {"nn", 4},        {"lm", 5},    {"train", 6},   {"grape", 7},
    {"eval", 7},  {"rlhf", 7},      {"diffusion", 7},             {"tasks", 8},
    {"cli", 9},
};

struct Include {
  std::string target;  // "concord/lm/causal_lm.h", or a system header
  bool system = false;
  int line = 0;
};

std::vector<Include> includes_of(const fs::path& file) {
  std::ifstream in(file);
  std::vector<Include> out;
  static const std::regex include_line(R"re(^\s*#\s*include\s*([<"])([^">]+)[">])re");
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    std::smatch m;
    if (std::regex_search(text, m, include_line)) {
      out.push_back({m[2].str(), m[1].str() == "<", line});
    }
  }
  return out;
}

bool is_source(const fs::path& p) {
  const auto ext = p.extension().string();
  return ext == ".h" || ext == ".cpp" || ext == ".cu" || ext == ".cuh";
}

std::string where(const fs::path& file, int line) {
  return fs::relative(file, kRoot).generic_string() + ":" + std::to_string(line);
}

// "concord/lm/x.h" -> "lm"; "" for anything else.
std::string module_of_include(const std::string& target) {
  static const std::regex concord_header(R"(^concord/([a-z_]+)/)");
  std::smatch m;
  return std::regex_search(target, m, concord_header) ? m[1].str() : "";
}

}  // namespace

TEST(Layering, EveryFileIncludesOnlyFromItsLayerOrBelow) {
  int checked = 0;
  for (const auto& top : {kRoot / "include" / "concord", kRoot / "src"}) {
    for (const auto& entry : fs::recursive_directory_iterator(top)) {
      if (!entry.is_regular_file() || !is_source(entry.path())) continue;
      const auto rel = fs::relative(entry.path(), top);
      if (rel.begin() == rel.end() || std::next(rel.begin()) == rel.end()) continue;  // top-level files
      const std::string module = rel.begin()->string();
      const auto own = kRank.find(module);
      ASSERT_NE(own, kRank.end())
          << fs::relative(entry.path(), kRoot).generic_string() << ": module '" << module
          << "' has no layer; add it to docs/architecture.md and to kRank in this test";
      for (const auto& inc : includes_of(entry.path())) {
        if (inc.system) continue;
        if (inc.target == "concord/concord.h") {
          EXPECT_EQ(module, "cli") << where(entry.path(), inc.line)
                                   << ": library code includes the umbrella header";
          continue;
        }
        const std::string used = module_of_include(inc.target);
        if (used.empty()) continue;
        const auto rank = kRank.find(used);
        ASSERT_NE(rank, kRank.end()) << where(entry.path(), inc.line) << ": unknown module '"
                                     << used << "'";
        EXPECT_LE(rank->second, own->second)
            << where(entry.path(), inc.line) << ": " << module << " (layer " << own->second
            << ") includes " << inc.target << " from " << used << " (layer " << rank->second
            << "), a layer above it";
        if (rank->second == own->second && used != module) {
          // Same rank, different module: only the foundation's and models' pairs share one
          // library; capabilities (grape, eval, rlhf, diffusion) never include each other.
          EXPECT_LT(own->second, 7) << where(entry.path(), inc.line) << ": capability " << module
                                    << " includes capability " << used;
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 300);  // the tree has ~600 such includes; a broken walk must not pass
}

TEST(Layering, KernelsStayBelowTheTensorLibrary) {
  int files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(kRoot / "kernels")) {
    if (!entry.is_regular_file() || !is_source(entry.path())) continue;
    ++files;
    const bool cuda = fs::relative(entry.path(), kRoot / "kernels").begin()->string() == "cuda";
    for (const auto& inc : includes_of(entry.path())) {
      const std::string used = module_of_include(inc.target);
      if (!used.empty()) {
        EXPECT_EQ(used, "core") << where(entry.path(), inc.line)
                                << ": kernels use no Concord header but concord/core's";
      }
      if (cuda && inc.system) {
        for (const char* torch : {"ATen/", "torch/", "c10/"}) {
          EXPECT_NE(inc.target.rfind(torch, 0), 0u)
              << where(entry.path(), inc.line)
              << ": CUDA kernels take raw pointers and never include torch headers";
        }
      }
    }
  }
  EXPECT_GE(files, 10);
}
