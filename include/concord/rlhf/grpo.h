// Group-relative policy optimisation (GRPO; Shao et al. 2024, "DeepSeekMath", Sec. 4.1), for
// users without the memory of PPO's value head: G responses per prompt, each advantage the
// response's score standardised within its group,
//
//   A_i = (s_i - mean_j s_j) / (std_j s_j + 1e-4)        (or without the division: scale_rewards)
//
// given to every token of response i, and the per-token objective
//
//   l_t = -min(rho_t A_i, clip(rho_t, 1 - eps, 1 + eps) A_i) + beta * KL3_t
//
// with KL3 = pi_ref / pi - log(pi_ref / pi) - 1 against the frozen reference. loss_type "grpo"
// averages each response's tokens, then the responses (the paper); "token" averages over every
// token of the batch (no length bias towards short responses). The scores come from the same
// aggregators as PPO, so GRPO runs MaxMin too (aggregator "min" or "argmin_group").
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/lm/causal_lm.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/rollout.h"
#include "concord/train/objective.h"
#include "concord/train/trainer.h"

namespace concord::rlhf {

struct GrpoOptions {
  int64_t batch_size = 4;           ///< prompts per iteration
  int64_t num_generations = 8;      ///< G: responses per prompt
  int64_t mini_batch_size = 16;     ///< responses per optimizer step
  int64_t num_iterations = 1;       ///< passes over each rollout batch (mu)
  double beta = 0.04;               ///< KL coefficient (DeepSeekMath's 0.04)
  double epsilon = 0.2;             ///< ratio clip
  bool scale_rewards = true;        ///< divide by the group's standard deviation
  std::string loss_type = "grpo";   ///< grpo | token
  bool normalize_rewards = false;   ///< as PpoOptions::normalize_rewards
  uint64_t seed = 0;
};

const OptionsSchema<GrpoOptions>& grpo_options_schema();

/// A_i over groups of G consecutive scores [N * G] -> [N * G].
at::Tensor group_relative_advantages(const at::Tensor& scores, int64_t group_size, bool scale);

/// The per-token GRPO loss [b, R] (unmasked): -min(rho A, clip(rho) A) + beta * KL3, with
/// rho = exp(logprobs - old_logprobs) and advantages [b] broadcast over each response.
at::Tensor grpo_per_token_loss(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                               const at::Tensor& ref_logprobs, const at::Tensor& advantages,
                               double epsilon, double beta);

struct GrpoBatch {
  int64_t prompt_length = 0;
  at::Tensor sequences, attention_mask, mask;  ///< mask [b, R] fp32
  at::Tensor old_logprobs, ref_logprobs;       ///< [b, R]
  at::Tensor advantages;                       ///< [b]
};

class GrpoObjective final : public train::Objective<GrpoBatch> {
 public:
  /// `share_prompts`: a minibatch's rows of one prompt run its columns once (response_outputs).
  GrpoObjective(lm::CausalLM policy, const GrpoOptions& options, double temperature,
                bool share_prompts = true)
      : policy_(std::move(policy)),
        options_(options),
        temperature_(temperature),
        share_prompts_(share_prompts) {}
  /// Responses (loss_type grpo) or response tokens (token).
  int64_t count(const GrpoBatch& batch) const override;
  train::LossSum loss(const GrpoBatch& batch) override;

 private:
  lm::CausalLM policy_;
  GrpoOptions options_;
  double temperature_;
  bool share_prompts_;
};

struct GrpoIteration {
  int64_t iteration = 0;
  std::map<std::string, double> metrics;  ///< TRL's names: reward, reward_std, kl, clip_ratio, ...
  nlohmann::json aggregator_choice;
  nlohmann::json to_json() const;
};

class GrpoTrainer {
 public:
  GrpoTrainer(lm::CausalLM policy, lm::CausalLM reference, RewardSet rewards,
              std::unique_ptr<RewardAggregator> aggregator, GrpoOptions options,
              RolloutOptions rollout, train::TrainerOptions train);
  /// One iteration on options.batch_size prompts.
  GrpoIteration step(const std::vector<std::vector<int64_t>>& prompts);

  train::Trainer& trainer() { return trainer_; }
  int64_t iteration() const { return iteration_; }
  void set_iteration(int64_t i) { iteration_ = i; }
  /// The rollout options in use (with the reward normalisation once calibrated), for
  /// checkpoints; set_rollout_options restores them.
  const RolloutOptions& rollout_options() const { return rollout_; }
  void set_rollout_options(RolloutOptions rollout) { rollout_ = std::move(rollout); }

 private:
  lm::CausalLM policy_, reference_;
  RewardSet rewards_;
  std::unique_ptr<RewardAggregator> aggregator_;
  GrpoOptions options_;
  RolloutOptions rollout_;
  train::Trainer trainer_;
  at::Generator generator_;
  int64_t iteration_ = 0;
};

}  // namespace concord::rlhf
