#include "concord/io/safetensors_sharded.h"

#include <algorithm>
#include <cstdio>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::io {

namespace {

// huggingface_hub refuses index files above 10 MB; a real one is a few hundred KB.
constexpr uintmax_t kMaxIndexBytes = 10 * 1024 * 1024;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(),
                                                suffix) == 0;
}

// A shard name must stay inside the index's folder and be a safetensors file, whatever OS wrote
// or reads it: no root, no drive, no "..", no backslash tricks (the hub's rule).
void check_shard_name(const std::string& name, const std::string& index) {
  bool bad = name.empty() || name.front() == '/' || name.front() == '\\' ||
             (name.size() >= 2 && name[1] == ':') || name.find('\0') != std::string::npos;
  size_t start = 0;
  while (!bad && start <= name.size()) {
    size_t stop = name.find_first_of("/\\", start);
    if (stop == std::string::npos) stop = name.size();
    if (name.compare(start, stop - start, "..") == 0 && stop - start == 2) bad = true;
    start = stop + 1;
  }
  if (bad) {
    fail_format(index, "weight_map names shard ", json_quoted(name),
                ", which is not a relative path inside the checkpoint folder");
  }
  if (!ends_with(name, ".safetensors")) {
    fail_format(index, "weight_map names shard ", json_quoted(name),
                ", which does not end in .safetensors");
  }
}

uint64_t tensor_bytes(const at::Tensor& t) {
  return static_cast<uint64_t>(t.numel()) * t.element_size();
}

std::string shard_name(const std::string& prefix, size_t index, size_t count) {
  char suffix[40];
  std::snprintf(suffix, sizeof suffix, "-%05zu-of-%05zu", index + 1, count);
  return prefix + suffix + ".safetensors";
}

}  // namespace

ShardedSafetensors::ShardedSafetensors(const fs::path& index_path) : index_path_(index_path) {
  const std::string index = index_path.string();
  std::error_code ec;
  uintmax_t bytes = fs::file_size(index_path, ec);
  if (ec) fail_io(index, "cannot read: ", ec.message());
  if (bytes > kMaxIndexBytes) {
    fail_format(index, "index is ", bytes, " bytes, more than the ", kMaxIndexBytes,
                "-byte limit");
  }
  json root;
  try {
    root = json::parse(read_file(index_path));
  } catch (const json::exception& e) {
    fail_format(index, "not valid JSON: ", e.what());
  }
  if (!root.is_object()) fail_format(index, "index must be a JSON object");
  if (root.contains("metadata")) {
    if (!root["metadata"].is_object()) fail_format(index, "metadata must be an object");
    index_metadata_ = root["metadata"];
  }
  if (!root.contains("weight_map") || !root["weight_map"].is_object()) {
    fail_format(index, "weight_map is missing or not an object");
  }
  const fs::path folder = index_path.parent_path();
  for (const auto& [name, file] : root["weight_map"].items()) {
    if (!file.is_string()) {
      fail_format(index, "weight_map[", json_quoted(name), "] must be a file name, got ",
                  file.dump());
    }
    const std::string& shard = file.get_ref<const std::string&>();
    auto it = shards_.find(shard);
    if (it == shards_.end()) {
      check_shard_name(shard, index);
      it = shards_.emplace(shard, std::make_shared<SafetensorsFile>(folder / shard)).first;
    }
    if (!it->second->contains(name)) {
      fail_format(index, "weight_map puts tensor ", json_quoted(name), " in ", shard,
                  ", which has no such tensor");
    }
    where_.emplace(name, it->second);
  }
}

std::vector<std::string> ShardedSafetensors::keys() const {
  std::vector<std::string> names;
  names.reserve(where_.size());
  for (const auto& entry : where_) names.push_back(entry.first);
  return names;  // std::map keeps them sorted
}

const SafetensorsTensorInfo& ShardedSafetensors::info(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(index_path_.string(), ": no tensor named ", json_quoted(name));
  return it->second->info(name);
}

at::Tensor ShardedSafetensors::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(index_path_.string(), ": no tensor named ", json_quoted(name));
  return it->second->get(name);
}

bool ShardedSafetensors::is_zero_copy(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(index_path_.string(), ": no tensor named ", json_quoted(name));
  return it->second->is_zero_copy(name);
}

void ShardedSafetensors::read_into(const std::string& name, const at::Tensor& dest) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(index_path_.string(), ": no tensor named ", json_quoted(name));
  it->second->read_into(name, dest);
}

const fs::path& ShardedSafetensors::shard_path(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail(index_path_.string(), ": no tensor named ", json_quoted(name));
  return it->second->path();
}

std::optional<uint64_t> ShardedSafetensors::total_size() const {
  if (!index_metadata_.contains("total_size")) return std::nullopt;
  const json& v = index_metadata_["total_size"];
  if (!v.is_number_unsigned()) return std::nullopt;
  return v.get<uint64_t>();
}

std::vector<fs::path> ShardedSafetensors::shard_paths() const {
  std::vector<fs::path> paths;
  for (const auto& entry : shards_) paths.push_back(entry.second->path());
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::map<std::string, at::Tensor> load_safetensors_sharded(const fs::path& index_path) {
  ShardedSafetensors checkpoint(index_path);
  std::map<std::string, at::Tensor> out;
  for (const auto& name : checkpoint.keys()) out.emplace(name, checkpoint.get(name));
  return out;
}

std::map<std::string, at::Tensor> load_safetensors_checkpoint(const fs::path& path) {
  if (fs::is_directory(path)) {
    if (fs::exists(path / kSafetensorsIndexName)) {
      return load_safetensors_sharded(path / kSafetensorsIndexName);
    }
    if (fs::exists(path / "model.safetensors")) return load_safetensors(path / "model.safetensors");
    fail(path.string(), ": holds neither ", kSafetensorsIndexName, " nor model.safetensors");
  }
  if (ends_with(path.filename().string(), ".index.json")) return load_safetensors_sharded(path);
  return load_safetensors(path);
}

std::map<std::string, std::string> plan_safetensors_shards(
    const std::map<std::string, at::Tensor>& tensors, uint64_t max_shard_bytes,
    const std::string& prefix) {
  CONCORD_CHECK(max_shard_bytes > 0, "save_safetensors_sharded: max_shard_bytes must be > 0");
  // The hub's rule, step for step: an oversized tensor gets a shard of its own (appended before
  // the shard being filled), otherwise close the current shard when the tensor would overflow it.
  std::vector<std::vector<const std::string*>> shards;
  std::vector<const std::string*> current;
  uint64_t current_bytes = 0;
  for (const auto& [name, tensor] : tensors) {
    CONCORD_CHECK(tensor.defined(), "save_safetensors_sharded: tensor ", json_quoted(name),
                  " is undefined");
    uint64_t bytes = tensor_bytes(tensor);
    if (bytes > max_shard_bytes) {
      shards.push_back({&name});
      continue;
    }
    if (current_bytes + bytes > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(&name);
    current_bytes += bytes;
  }
  if (!current.empty()) shards.push_back(std::move(current));

  std::map<std::string, std::string> plan;
  if (shards.size() <= 1) {
    for (const auto& entry : tensors) plan.emplace(entry.first, prefix + ".safetensors");
    return plan;
  }
  for (size_t i = 0; i < shards.size(); ++i) {
    for (const std::string* name : shards[i]) {
      plan.emplace(*name, shard_name(prefix, i, shards.size()));
    }
  }
  return plan;
}

std::vector<fs::path> save_safetensors_sharded(const fs::path& folder,
                                               const std::map<std::string, at::Tensor>& tensors,
                                               uint64_t max_shard_bytes,
                                               const std::map<std::string, std::string>& metadata,
                                               const std::string& prefix) {
  std::map<std::string, std::string> plan = plan_safetensors_shards(tensors, max_shard_bytes,
                                                                    prefix);
  std::map<std::string, std::map<std::string, at::Tensor>> by_file;
  uint64_t total = 0;
  for (const auto& [name, file] : plan) {
    by_file[file].emplace(name, tensors.at(name));
    total += tensor_bytes(tensors.at(name));
  }
  if (by_file.empty()) by_file[prefix + ".safetensors"];  // no tensors: one empty file

  std::vector<fs::path> written;
  for (const auto& [file, shard] : by_file) {
    save_safetensors(folder / file, shard, metadata);
    written.push_back(folder / file);
  }
  if (by_file.size() > 1) {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", json(plan)}};
    // Python's json.dumps(index, indent=2, sort_keys=True) + "\n", ensure_ascii included.
    fs::path index_path = folder / (prefix + ".safetensors.index.json");
    write_file_atomic(index_path, index.dump(2, ' ', true) + "\n");
    written.push_back(index_path);
  }
  return written;
}

}  // namespace concord::io
