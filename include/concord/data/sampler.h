// Seeded, resumable, rank-sharded batch sampling.
//
// Epoch e visits the items in the order of a permutation drawn from (seed, e) — Fisher-Yates
// over a std::mt19937_64 (whose output the C++ standard fixes) with our own unbiased bounded
// draw, because std::shuffle and std::uniform_int_distribution differ between standard
// libraries. So the order depends only on (seed, epoch, number of items), on every platform.
//
// Sharding: rank r of w takes positions r, r + w, r + 2w, ... of the epoch's permutation. The
// ranks' slices are disjoint, their union is every item, and their sizes differ by at most one
// (`even_shards` drops the last N mod w positions of each epoch instead, so every rank runs the
// same number of batches — what data-parallel training with collective ops needs).
//
// The state is (seed, epoch, position = batches already taken this epoch); saved as JSON beside
// a checkpoint and restored, the sampler continues with exactly the batches an uninterrupted
// run would have produced.
#pragma once
#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

namespace concord::data {

struct SamplerOptions {
  int64_t batch_size = 1;
  bool shuffle = true;
  uint64_t seed = 0;
  /// Drop this rank's last batch of an epoch when it is smaller than batch_size.
  bool drop_last = false;
  int64_t rank = 0;
  int64_t world_size = 1;
  /// Give every rank floor(N / world_size) items per epoch (see the header comment).
  bool even_shards = false;

  /// These options for this process of a torchrun-style job (RANK, WORLD_SIZE: core/shard.h):
  /// its rank and world size, and even_shards when there are several, so every rank takes the
  /// same number of steps (a data-parallel step waits for all). batch_size stays per process.
  SamplerOptions for_this_process() const;
};

class BatchSampler {
 public:
  BatchSampler(int64_t num_items, SamplerOptions options);

  /// The next batch of item indices; after the last batch of an epoch it moves to the next
  /// epoch (a new permutation) and carries on.
  std::vector<int64_t> next();

  int64_t epoch() const { return epoch_; }
  /// Batches already taken in the current epoch.
  int64_t position() const { return position_; }
  int64_t batches_per_epoch() const;
  int64_t num_items() const { return num_items_; }
  const SamplerOptions& options() const { return options_; }

  /// This rank's items in epoch `epoch`, in visiting order.
  std::vector<int64_t> epoch_items(int64_t epoch) const;

  /// {"seed","epoch","position"} plus the settings the state is only valid for
  /// (num_items, batch_size, shuffle, drop_last, rank, world_size, even_shards).
  nlohmann::json state() const;
  /// Restores a state(); a mismatch in num_items, batch_size or sharding throws concord::Error
  /// naming the key (resuming on other data would silently change the run).
  void load_state(const nlohmann::json& state);

  /// The permutation of 0..n-1 for (seed, epoch) used when shuffling.
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch);

 private:
  void start_epoch(int64_t epoch);

  int64_t num_items_;
  SamplerOptions options_;
  int64_t epoch_ = 0;
  int64_t position_ = 0;
  std::vector<int64_t> items_;  ///< this rank's items of the current epoch
};

/// A dataset (anything with size() and get_batch(indices)) and a sampler over it.
template <typename Dataset>
class DataLoader {
 public:
  DataLoader(const Dataset& dataset, SamplerOptions options)
      : dataset_(dataset), sampler_(dataset.size(), options) {}

  auto next() { return dataset_.get_batch(sampler_.next()); }
  BatchSampler& sampler() { return sampler_; }
  const BatchSampler& sampler() const { return sampler_; }

 private:
  const Dataset& dataset_;
  BatchSampler sampler_;
};

}  // namespace concord::data
