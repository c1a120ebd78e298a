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
// buckets of about `bucket_mb` MB, filled in reverse parameter order, the order backward
// produces them. As PyTorch's DDP does (Li et al., "PyTorch Distributed: Experiences on
// Accelerating Data Parallel Training", VLDB 2020):
//   - each bucket is one persistent flat buffer and the parameters' gradients are views into it
//     (begin_step()), so backward accumulates straight into what is sent: no copy in or out;
//   - during the step's last backward (arm()), a hook after each parameter's gradient
//     accumulation counts down its bucket, and a bucket whose gradients are all final is sent at
//     once, while backward goes on with the layers below. Buckets are sent strictly in order,
//     so every rank issues the same collectives in the same order; those left (parameters
//     without a gradient this step) go when backward ends (all_reduce_gradients()).
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
  bool overlap = true;           ///< the Trainer arms the buckets for its last backward
};

class DataParallel {
 public:
  /// `params`: the named parameters under optimisation, in the optimiser's order (every rank
  /// must pass the same list).
  DataParallel(std::shared_ptr<ProcessGroup> group,
               std::vector<std::pair<std::string, at::Tensor>> params, DataParallelOptions options);
  /// Removes the gradient hooks (the parameters may outlive this object).
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int64_t rank() const { return group_->rank(); }
  int64_t world_size() const { return group_->world_size(); }
  ProcessGroup& group() { return *group_; }
  const DataParallelOptions& options() const { return options_; }

  /// Broadcasts every parameter and buffer of `modules` from rank 0.
  void broadcast_modules(const std::vector<NamedModule>& modules);
  /// Instead of zeroing the gradients: the buckets are zeroed and every parameter's gradient
  /// becomes its view into its bucket.
  void begin_step();
  /// The next backward is the step's last: each bucket is sent as soon as its gradients are
  /// final.
  void arm();
  /// Sums the gradients of the parameters over the ranks: sends the buckets not sent during
  /// backward, in order, and waits for all. A parameter without a gradient on this rank
  /// contributes zeros (and gets the sum); a gradient that is not its bucket's view (begin_step
  /// not called) is copied in, and its parameter gets the view back.
  void all_reduce_gradients();
  /// Buckets sent during backward in the last step (what the overlap achieved; for tests).
  int64_t buckets_sent_during_backward() const { return sent_early_; }
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
  void on_gradient_ready(size_t param);
  void launch(size_t bucket);
  struct Hooks;

  std::vector<int64_t> owners_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_, reverse order
  std::vector<at::Tensor> buffers_;           // one flat buffer per bucket
  std::vector<size_t> bucket_of_;             // per parameter
  std::vector<int64_t> offset_of_;            // per parameter: where its view starts
  // The step's last backward: gradients still to come per bucket, the next bucket to send and
  // the collectives in flight.
  bool armed_ = false;
  std::vector<int64_t> pending_;
  size_t next_launch_ = 0;
  std::vector<PendingCollective> in_flight_;
  int64_t sent_early_ = 0;
  std::unique_ptr<Hooks> hooks_;
};

}  // namespace concord::train
