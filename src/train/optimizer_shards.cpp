#include "concord/train/optimizer_shards.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "concord/core/error.h"
#include "concord/io/safetensors.h"

namespace concord::train {

namespace fs = std::filesystem;

namespace {
constexpr const char* kStateFile = "training_state.safetensors";  // checkpoint.h's layout
constexpr const char* kShardFolder = "optimizer";

std::string padded(int64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%05lld", static_cast<long long>(v));
  return buf;
}

// Optimiser entries end in .exp_avg, .exp_avg_sq or .step; the training state also holds the
// RNG ("__rng.cpu").
bool is_optimizer_entry(const std::string& key) { return key.rfind("__", 0) != 0; }
}  // namespace

std::string optimizer_shard_name(int64_t rank, int64_t world_size) {
  return std::string(kShardFolder) + "/rank-" + padded(rank) + "-of-" + padded(world_size) +
         ".safetensors";
}

fs::path pending_shard_path(const fs::path& checkpoints_dir, int64_t step, int64_t rank) {
  char name[96];
  std::snprintf(name, sizeof(name), "zero-step-%08lld-rank-%05lld.safetensors",
                static_cast<long long>(step), static_cast<long long>(rank));
  return checkpoints_dir / name;
}

void save_optimizer_shard(const fs::path& path, const AdamW& optimizer) {
  fs::create_directories(path.parent_path());
  io::save_safetensors(path, optimizer.state_dict(), {{"concord.content", "optimizer shard"}});
}

std::map<std::string, at::Tensor> load_optimizer_shards(const fs::path& checkpoint) {
  std::vector<fs::path> files{checkpoint / kStateFile};
  const fs::path folder = checkpoint / kShardFolder;
  if (fs::is_directory(folder)) {
    std::vector<fs::path> shards;
    for (const auto& e : fs::directory_iterator(folder)) {
      if (e.path().extension() == ".safetensors") shards.push_back(e.path());
    }
    std::sort(shards.begin(), shards.end());
    files.insert(files.end(), shards.begin(), shards.end());
  }
  std::map<std::string, at::Tensor> out;
  std::map<std::string, fs::path> from;
  for (const auto& path : files) {
    const io::SafetensorsFile file(path);
    for (const auto& key : file.keys()) {
      if (!is_optimizer_entry(key)) continue;
      auto [it, fresh] = from.emplace(key, path);
      if (!fresh) {
        fail_format(path.string(), "optimizer entry '", key, "' is also in ",
                    it->second.string());
      }
      out[key] = file.get(key).clone();
    }
  }
  return out;
}

}  // namespace concord::train
