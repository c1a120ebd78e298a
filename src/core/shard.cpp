#include "concord/core/shard.h"

#include <cerrno>
#include <cstdlib>

#include "concord/core/files.h"

namespace fs = std::filesystem;

namespace concord {

namespace {

// An environment variable as an integer; absent or empty gives `fallback`.
int64_t env_integer(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (end == v || *end != '\0' || errno == ERANGE) {
    fail_config(std::string(name) + "=" + v, "expected an integer (set as torchrun sets it)");
  }
  return n;
}

}  // namespace

std::vector<int64_t> Shard::indices(int64_t count) const {
  std::vector<int64_t> out;
  for (int64_t i = rank; i < count; i += world_size) out.push_back(i);
  return out;
}

void Shard::validate() const {
  CONCORD_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "rank ", rank,
                " out of range for world size ", world_size);
}

Shard process_shard() {
  Shard s;
  s.world_size = env_integer("WORLD_SIZE", 1);
  s.rank = env_integer("RANK", 0);
  if (s.world_size < 1 || s.rank < 0 || s.rank >= s.world_size) {
    fail_config("RANK=" + std::to_string(s.rank) + " WORLD_SIZE=" + std::to_string(s.world_size),
                "expected 0 <= RANK < WORLD_SIZE");
  }
  s.local_rank = env_integer("LOCAL_RANK", 0);
  if (s.local_rank < 0) fail_config("LOCAL_RANK=" + std::to_string(s.local_rank), "expected >= 0");
  return s;
}

std::string shard_part_name(const std::string& final_name, const Shard& part) {
  const fs::path p(final_name);
  return p.stem().string() + ".rank" + std::to_string(part.rank) + "-of-" +
         std::to_string(part.world_size) + p.extension().string();
}

ShardParts::ShardParts(fs::path dir, std::string final_name, int64_t world_size)
    : dir_(std::move(dir)), final_name_(std::move(final_name)), world_size_(world_size) {
  CONCORD_CHECK(world_size_ >= 1, "ShardParts: world size must be >= 1, got ", world_size_);
}

fs::path ShardParts::path(int64_t rank) const {
  CONCORD_CHECK(rank >= 0 && rank < world_size_, "ShardParts: rank ", rank,
                " out of range for world size ", world_size_);
  return dir_ / shard_part_name(final_name_, Shard{rank, world_size_});
}

void ShardParts::write(int64_t rank, const std::string& contents) const {
  write_file_atomic(path(rank), contents);
}

std::vector<int64_t> ShardParts::missing() const {
  std::vector<int64_t> out;
  for (int64_t r = 0; r < world_size_; ++r) {
    if (!has(r)) out.push_back(r);
  }
  return out;
}

std::string ShardParts::missing_names() const {
  std::string out;
  for (int64_t r : missing()) out += (out.empty() ? "" : ", ") + path(r).filename().string();
  return out;
}

std::vector<fs::path> ShardParts::paths() const {
  std::vector<fs::path> out;
  for (int64_t r = 0; r < world_size_; ++r) out.push_back(path(r));
  return out;
}

}  // namespace concord
