// Data parallel training over a ProcessGroup (process_group.h): what the Trainer does at its
// gradient seam when the job has several processes.
//
// Every rank holds the whole model. At the start rank 0's parameters and buffers are broadcast,
// so every rank begins from the same weights whatever it initialised. At each step each rank
// backpropagates its own micro-batches scaled by 1/N, N the units of the whole step over all
// ranks, so the sum over ranks of the gradients is the gradient of the global mean loss
//
//   L = (1/N) sum_r sum_{b in B_r} loss_sum(b),   N = sum_r sum_{b in B_r} count(b),
//
// exactly what one process computes on the union of the ranks' batches. The sum is taken in
// buckets of about `bucket_mb` MB (gradients flattened into one buffer per bucket, every bucket
// sent before the first wait, so Gloo pipelines them), and buckets are filled in reverse
// parameter order, the order backward produces them.
//
// ZeRO stage 1 (Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
// Parameter Models", 2020), `shard_optimizer`: parameters are assigned to ranks (greedy by size,
// in parameter order, so every rank computes the same assignment); each rank runs AdamW only on
// its own parameters, so the moments of the others are never allocated there, then every
// parameter is broadcast from its owner. Per rank, AdamW's state shrinks from 8P bytes to about
// 8P / world_size; the weights travel once more per step (P bytes broadcast in all).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/train/checkpoint.h"
#include "concord/train/process_group.h"

namespace concord::train {

struct DataParallelOptions {
  double bucket_mb = 25;         ///< gradient bucket size (PyTorch DDP's default)
  bool shard_optimizer = false;  ///< ZeRO stage 1 (see the header comment)
};

class DataParallel {
 public:
  /// `params`: the named parameters under optimisation, in the optimiser's order (every rank
  /// must pass the same list).
  DataParallel(std::shared_ptr<ProcessGroup> group,
               std::vector<std::pair<std::string, at::Tensor>> params, DataParallelOptions options);

  int64_t rank() const { return group_->rank(); }
  int64_t world_size() const { return group_->world_size(); }
  ProcessGroup& group() { return *group_; }
  const DataParallelOptions& options() const { return options_; }

  /// Broadcasts every parameter and buffer of `modules` from rank 0.
  void broadcast_modules(const std::vector<NamedModule>& modules);
  /// Sums the gradients of the parameters over the ranks, in buckets; a parameter without a
  /// gradient on this rank contributes zeros (and gets the sum).
  void all_reduce_gradients();
  /// ZeRO-1: the rank that updates parameter `i` (0 without shard_optimizer).
  int64_t owner(size_t i) const { return owners_[i]; }
  /// ZeRO-1: whether this rank updates the parameter named `name`.
  bool owns(const std::string& name) const;
  /// ZeRO-1: drops the gradients of the parameters another rank updates, so AdamW::step leaves
  /// them (and their state) alone here.
  void drop_foreign_gradients();
  /// ZeRO-1: every parameter from its owner, one flattened broadcast per owner and bucket.
  void broadcast_updated_parameters();

  /// The layout a checkpoint records: world size, bucket size, sharding and each parameter's
  /// owner.
  nlohmann::json layout() const;

 private:
  std::shared_ptr<ProcessGroup> group_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  DataParallelOptions options_;
  std::vector<int64_t> owners_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_, reverse order
};

}  // namespace concord::train
