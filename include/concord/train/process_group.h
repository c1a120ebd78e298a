// The processes of a data-parallel job and the collectives Concord runs between them, on
// LibTorch's own engine (c10d): Gloo between CPU processes, over a TCPStore rendezvous.
//
// CUDA tensors: a build against a CUDA LibTorch with c10d's NCCL backend (CONCORD_HAS_NCCL; the
// pip flavour) also makes a ProcessGroupNCCL on the same store when this process sees CUDA and
// a device of its own, cuda:LOCAL_RANK, which becomes the current device. all_reduce_sum and
// broadcast then send CUDA tensors through NCCL, in place on the device, and host tensors
// through Gloo; the host-number all-reduce, broadcast_string and barrier stay on Gloo. A CUDA
// tensor on another device is refused before anything is sent. Without CUDA at run time (or in
// a build without NCCL) everything goes through Gloo, as before.
//
// A job is launched as torchrun launches one: every process gets RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR and MASTER_PORT (`concord launch -n N ...` sets them for N local processes; Slurm
// `srun` and a Kubernetes PyTorchJob set them the same way). Rank 0 serves the store at
// MASTER_ADDR:MASTER_PORT, every rank connects to it, and the Gloo pairs are set up through it.
//
// Every collective blocks until it has finished on this process. A peer that dies or stops
// answering makes the collective fail here, with a DistributedError that names the operation,
// this rank and the likely cause, instead of a hang: Gloo notices a closed connection at once
// and a silent peer after `timeout_s`. NCCL runs in blocking-wait mode (TORCH_NCCL_BLOCKING_WAIT=1
// unless the environment sets it) so that its failures and timeouts come back the same way.
//
// The c10d headers stay in process_group.cpp (they differ between LibTorch 1.13 and 2.x and
// pull in Gloo's and NCCL's).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/core/error.h"

namespace concord::train {

/// A collective failed: a peer died, timed out, or the rendezvous did not complete.
class DistributedError : public Error {
 public:
  using Error::Error;
};

/// This process's place in the job, as torchrun describes it.
struct ProcessGroupOptions {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int64_t master_port = 29500;
  /// How long a collective (and the rendezvous) waits for a silent peer.
  double timeout_s = 300;

  /// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (absent: rank 0 of 1, 127.0.0.1,
  /// 29500) and CONCORD_DIST_TIMEOUT (seconds). A malformed value is a ConfigError naming it.
  static ProcessGroupOptions from_environment();
};

/// A collective in flight (ProcessGroup::all_reduce_sum_async). wait() blocks until it is done
/// and throws DistributedError as the blocking calls do; a default-constructed one is done.
class PendingCollective {
 public:
  PendingCollective();
  ~PendingCollective();
  PendingCollective(PendingCollective&&) noexcept;
  PendingCollective& operator=(PendingCollective&&) noexcept;
  void wait();

 private:
  friend class ProcessGroup;
  struct Work;
  std::unique_ptr<Work> work_;
};

class ProcessGroup {
 public:
  /// Joins the job: rank 0 serves the rendezvous store, every rank connects and builds its Gloo
  /// pairs. Blocks until all `world_size` processes have joined (or timeout_s passes).
  explicit ProcessGroup(const ProcessGroupOptions& options);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const { return options_.rank; }
  int64_t world_size() const { return options_.world_size; }
  const ProcessGroupOptions& options() const { return options_; }

  /// Sums each tensor over the ranks, in place (contiguous dense tensors). All tensors are sent
  /// before the first wait, so Gloo pipelines them.
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  /// Starts summing `tensor` over the ranks, in place, and returns at once (DataParallel sends
  /// gradient buckets this way while backward goes on). Every rank must start the same
  /// collectives in the same order.
  PendingCollective all_reduce_sum_async(at::Tensor& tensor);
  /// Replaces each tensor by `root`'s (contiguous dense tensors), in place.
  void broadcast(std::vector<at::Tensor>& tensors, int64_t root);
  /// `root`'s string on every rank.
  std::string broadcast_string(const std::string& value, int64_t root);
  /// Sums host numbers over the ranks (one fp64 all-reduce).
  std::vector<double> all_reduce_sum(const std::vector<double>& values);
  void barrier();

  /// Bytes this process has sent into collectives so far (payload of all-reduces counted at
  /// the ring algorithm's 2 (w - 1) / w per byte, broadcasts at the size of the tensor): what
  /// the benchmark compares with the all-reduce lower bound.
  double bytes_communicated() const { return bytes_; }

 private:
  struct Impl;
  ProcessGroupOptions options_;
  std::unique_ptr<Impl> impl_;
  double bytes_ = 0;
};

/// The job's process group: made from the environment on first use when WORLD_SIZE > 1 and
/// kept for the life of the process; null when the process runs alone. Trainers join it.
std::shared_ptr<ProcessGroup> default_process_group();

/// Whether this Concord build can run data parallel (built with c10d's Gloo backend).
bool distributed_available();

}  // namespace concord::train
