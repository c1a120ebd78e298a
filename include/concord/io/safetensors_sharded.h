// Sharded safetensors checkpoints as Hugging Face transformers writes them: shard files
// `model-00001-of-00003.safetensors`, ... and an index `model.safetensors.index.json`
// (`{"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}`). Shards are
// filled the way huggingface_hub's `split_state_dict_into_shards_factory` fills them (which
// transformers' `save_pretrained` calls): tensors in order, a new shard when the next tensor
// would push the current one past the limit, a tensor larger than the limit alone in a shard.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/io/safetensors.h"

namespace concord::io {

/// The index file name transformers uses for safetensors weights.
inline constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";

/// All tensors of a sharded checkpoint behind one index, each shard mapped once.
class ShardedSafetensors {
 public:
  /// Reads `index_path` (`*.safetensors.index.json`) and opens every shard it names. Throws
  /// concord::FormatError naming the index or the shard: index larger than 10 MB (the hub's
  /// limit) or not JSON, weight_map missing or not an object of strings, a shard name that is
  /// absolute, holds "..", or does not end in ".safetensors", a tensor its shard lacks.
  explicit ShardedSafetensors(const std::filesystem::path& index_path);

  const std::filesystem::path& index_path() const { return index_path_; }
  /// Tensor names (the weight_map's keys), sorted.
  std::vector<std::string> keys() const;
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  size_t size() const { return where_.size(); }
  const SafetensorsTensorInfo& info(const std::string& name) const;
  /// The tensor, zero-copy where aligned (SafetensorsFile::get).
  at::Tensor get(const std::string& name) const;
  /// SafetensorsFile::is_zero_copy of the shard holding `name`.
  bool is_zero_copy(const std::string& name) const;
  /// SafetensorsFile::read_into of the shard holding `name`.
  void read_into(const std::string& name, const at::Tensor& dest) const;
  /// The shard that holds `name`.
  const std::filesystem::path& shard_path(const std::string& name) const;
  /// The index's "metadata" object (an empty object when absent).
  const nlohmann::json& index_metadata() const { return index_metadata_; }
  /// metadata.total_size when present and a non-negative integer.
  std::optional<uint64_t> total_size() const;
  /// Each shard's path, sorted.
  std::vector<std::filesystem::path> shard_paths() const;

 private:
  std::filesystem::path index_path_;
  nlohmann::json index_metadata_ = nlohmann::json::object();
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;  // by file name
  std::map<std::string, std::shared_ptr<SafetensorsFile>> where_;   // tensor name -> shard
};

/// Every tensor named by the index.
std::map<std::string, at::Tensor> load_safetensors_sharded(
    const std::filesystem::path& index_path);

/// Loads a checkpoint given as a `.safetensors` file, an `*.index.json`, or a folder holding
/// `model.safetensors.index.json` (preferred) or `model.safetensors`.
std::map<std::string, at::Tensor> load_safetensors_checkpoint(const std::filesystem::path& path);

/// The file each tensor goes to when `tensors` (in name order) is split at `max_shard_bytes`
/// (sizes are numel * element size): `<prefix>-00001-of-0000N.safetensors`, or
/// `<prefix>.safetensors` when everything fits one shard.
std::map<std::string, std::string> plan_safetensors_shards(
    const std::map<std::string, at::Tensor>& tensors, uint64_t max_shard_bytes,
    const std::string& prefix = "model");

/// Writes `tensors` into `folder` split by plan_safetensors_shards, each shard with `metadata`
/// (transformers writes {"format": "pt"}), then `<prefix>.safetensors.index.json` with
/// metadata.total_size and the weight_map, formatted as transformers formats it (sorted keys,
/// two-space indent, final newline). With a single shard no index is written, as in
/// transformers. Returns the files written, the index (if any) last; the index is written after
/// every shard, so a crash never leaves an index that names a missing shard.
std::vector<std::filesystem::path> save_safetensors_sharded(
    const std::filesystem::path& folder, const std::map<std::string, at::Tensor>& tensors,
    uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}},
    const std::string& prefix = "model");

}  // namespace concord::io
