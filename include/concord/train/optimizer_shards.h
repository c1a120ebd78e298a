// AdamW state split over the ranks of a ZeRO-1 run (data_parallel.h), inside a checkpoint:
//
//   step-00000200/training_state.safetensors        rank 0's share (and everything else)
//   step-00000200/optimizer/rank-00001-of-00004.safetensors   rank 1's share, ...
//
// Entries are named after the parameters ("<param>.exp_avg", ...), never after ranks, so a
// checkpoint resumes on any world size, sharded or not: each rank reads every shard and keeps
// the entries of the parameters it now updates. Before the checkpoint exists, rank r writes its
// share beside the checkpoints as zero-step-<step>-rank-<r>.safetensors (pending_shard_path);
// rank 0 moves the shares in before renaming the checkpoint into place (save_checkpoint's
// `extra_files`), so a checkpoint is never missing a share.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include "concord/train/adamw.h"

namespace concord::train {

/// "optimizer/rank-<r, 5 digits>-of-<w, 5 digits>.safetensors", relative to the checkpoint.
std::string optimizer_shard_name(int64_t rank, int64_t world_size);
/// Where rank `rank` writes its share of the checkpoint of `step` before it exists.
std::filesystem::path pending_shard_path(const std::filesystem::path& checkpoints_dir, int64_t step,
                                         int64_t rank);
/// Writes `optimizer`'s state (its share) atomically to `path`.
void save_optimizer_shard(const std::filesystem::path& path, const AdamW& optimizer);
/// Every optimiser entry of a checkpoint: training_state.safetensors' (less the RNG) and each
/// optimizer/*.safetensors'. An entry found twice throws naming both files.
std::map<std::string, at::Tensor> load_optimizer_shards(const std::filesystem::path& checkpoint);

}  // namespace concord::train
