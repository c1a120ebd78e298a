// The Bradley-Terry reward loss (the Bradley-Terry preference model of MaxMin-RLHF and Ouyang et al. 2022): for a pair where the
// user preferred y_c to y_r after prompt x,
//
//   loss = -log sigmoid(r(x, y_c) - r(x, y_r) - m)
//
// with m the pair's margin (TRL's "margin" column, 0 when absent), computed with log_sigmoid
// (never log of a sigmoid that has underflowed). TRL's optional reward centering adds
// c * (r(x, y_c) + r(x, y_r))^2 (its center_rewards_coefficient c; Eisenstein et al. 2023), which
// pins the rewards' mean near 0 without changing their differences.
//
// For a mixture of K reward models (EM's M-step) each pair trains the head of its user's cluster:
// hard assignments pick one head per user; soft ones weight every head's loss by the user's
// responsibility gamma[u, k]. Chosen and rejected sequences run as one batch of 2B rows, or, where
// their prompts are a large enough share of the tokens, with each pair's common prefix run once
// (rlhf/shared_prefix.h).
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/data/preference.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/shared_prefix.h"
#include "concord/train/objective.h"

namespace concord::rlhf {

/// Per-pair Bradley-Terry losses -log sigmoid(r_c - r_r - margin) (+ the centering term), as
/// TRL's RewardTrainer.compute_loss before its mean. `margin` may be undefined.
at::Tensor bradley_terry_loss(const at::Tensor& chosen, const at::Tensor& rejected,
                              const at::Tensor& margin, double center_rewards_coefficient = 0.0);

struct BradleyTerryOptions {
  /// TRL's center_rewards_coefficient (0: off).
  double center_rewards_coefficient = 0.0;
  /// Subtract each pair's margin inside the sigmoid.
  bool use_margin = true;
  /// Run each pair's common prefix (the prompt) once for both rows (rlhf/shared_prefix.h),
  /// in the batches where that saves at least kMinSharedFraction of the token slots. The
  /// rewards are those of the full rows up to floating-point summation order.
  bool share_prefixes = true;
};

class BradleyTerryObjective final : public train::Objective<data::PreferenceBatch> {
 public:
  explicit BradleyTerryObjective(RewardSet rewards, BradleyTerryOptions options = {});

  /// Hard assignment: head user_head[u] learns from user u's pairs ([U] int64; -1: the user's
  /// pairs are skipped). Default: every pair trains head 0.
  void set_user_heads(at::Tensor user_head);
  /// Soft assignment: every head learns from every pair, weighted by gamma[u, k] ([U, K]).
  void set_user_weights(at::Tensor gamma);

  int64_t count(const data::PreferenceBatch& batch) const override;
  int64_t inputs(const data::PreferenceBatch& batch) const override;
  /// Metrics: "accuracy" (the trained head ranks chosen above rejected), "margin" (mean
  /// r_c - r_r), "rewards/chosen", "rewards/rejected"; each per pair.
  train::LossSum loss(const data::PreferenceBatch& batch) override;
  std::string unit() const override { return "pairs"; }

 private:
  RewardSet rewards_;
  BradleyTerryOptions options_;
  at::Tensor user_head_;  ///< [U] int64, or undefined
  at::Tensor gamma_;      ///< [U, K] fp32, or undefined
};

/// Chosen and rejected rows of a batch as one right-padded batch: ids and mask [2B, T], chosen
/// first.
std::pair<at::Tensor, at::Tensor> stack_pairs(const data::PreferenceBatch& batch, int64_t pad_id);

/// d[p, k] = r_k(chosen_p) - r_k(rejected_p) for every pair of `data` and every head ([P, K],
/// fp64 on the CPU), under InferenceMode with the models in eval mode (restored afterwards).
at::Tensor pair_reward_differences(RewardSet& rewards, const data::PreferenceDataset& data,
                                   int64_t batch_size = 16);

/// Batches of pairs balanced over clusters: slot i of every batch comes from cluster
/// (i + offset) mod C, in a per-cluster shuffled order that is drawn again after each pass over
/// the cluster. A minority cluster's head then sees as many pairs per step as the majority's.
/// Its position (per-cluster order seeds and offsets) is saved in checkpoints.
class ClusterBalancedPairs final : public train::BatchSource<data::PreferenceBatch> {
 public:
  /// `cluster_of_pair[p]` in [0, C) or -1 (left out). `data` must outlive this object.
  /// Data parallel: every rank draws the same global batch of batch_size x world_size pairs and
  /// takes the rank-th slice, so the job sees what one process with the whole batch would.
  ClusterBalancedPairs(const data::PreferenceDataset& data,
                       const std::vector<int64_t>& cluster_of_pair, int64_t batch_size,
                       uint64_t seed, int64_t rank = 0, int64_t world_size = 1);
  data::PreferenceBatch next() override;
  int64_t batches_per_epoch() const override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& state) override;

 private:
  void shuffle(size_t cluster);
  const data::PreferenceDataset& data_;
  int64_t batch_size_;
  uint64_t seed_;
  int64_t rank_, world_size_;
  std::vector<std::vector<int64_t>> members_;  ///< pairs of each non-empty cluster
  std::vector<std::vector<int64_t>> order_;    ///< their current shuffled order
  std::vector<int64_t> position_, pass_;
  int64_t slot_ = 0;
  int64_t total_ = 0;
};

}  // namespace concord::rlhf
