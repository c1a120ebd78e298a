// PPO for language models (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022), the
// policy optimiser of MaxMin-RLHF (its MaxMin RLHF algorithm), with TRL's conventions so that its defaults and
// metrics read the same. One iteration:
//
//   1. rollout: sample responses y ~ pi(.|x) for a batch of prompts; keep log pi(y_t) (rollout.h)
//   2. score:   s(x, y) = aggregator(r_1(x, y), ..., r_K(x, y)) (aggregate.h: min for MaxMin)
//   3. reward per token: r_t = -beta * KL_t + [t = last] * s, KL_t = log pi(y_t) - log pi_ref(y_t)
//               (k1; or k3 = (rho - 1) - log rho with rho = pi_ref / pi), beta fixed or adaptive
//   4. GAE:     delta_t = r_t + gamma V(s_{t+1}) - V(s_t),  A_t = sum_l (gamma lambda)^l delta_{t+l},
//               returns R_t = A_t + V(s_t); advantages whitened over the batch's response tokens
//   5. update:  for ppo_epochs, over shuffled minibatches, minimise
//               L = mean_t max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))
//                 + vf_coef * 0.5 * mean_t max((V_t - R_t)^2, (clip(V_t, V_old -+ eps_v) - R_t)^2)
//               through the generic train::Trainer (clipping, AdamW, autocast, checkpoints);
//               stop the epochs early when the approximate KL passes 1.5 * target_kl.
//
// Defaults are TRL's PPOConfig of the version the paper used (lr 1.41e-5, adaptive KL from 0.2
// to target 6 over horizon 10000, gamma 1, lambda 0.95, clip 0.2, value clip 0.2, vf_coef 0.1).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/lm/causal_lm.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/policy.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/rollout.h"
#include "concord/train/objective.h"
#include "concord/train/trainer.h"

namespace concord::rlhf {

struct PpoOptions {
  int64_t batch_size = 16;        ///< rollouts per iteration
  int64_t mini_batch_size = 4;    ///< rollouts per optimizer step
  int64_t ppo_epochs = 4;         ///< passes over the rollouts per iteration
  double init_kl_coef = 0.2;      ///< beta at the start
  bool adaptive_kl = true;        ///< Ziegler et al.'s proportional controller
  double target = 6.0;            ///< the controller's target KL (nats per response)
  double horizon = 10000;         ///< the controller's horizon
  std::string kl_estimator = "k1";///< k1 | k3 (Schulman's unbiased, non-negative estimator)
  double gamma = 1.0;
  double lam = 0.95;
  double cliprange = 0.2;
  double cliprange_value = 0.2;
  double vf_coef = 0.1;
  bool whiten_rewards = false;    ///< whiten the per-token rewards before GAE
  bool early_stopping = false;    ///< stop an iteration's epochs when approx KL > 1.5 target_kl
  double target_kl = 1.0;
  double missing_eos_penalty = 0; ///< subtracted from the score of a response without a stop
  /// Put every reward model in one unit before aggregating: z-scores against the rewards of the
  /// starting policy's responses in the first iteration (rollout.h, RolloutOptions::reward_mean).
  bool normalize_rewards = false;
  uint64_t seed = 0;              ///< rollout sampling and minibatch shuffling
};

/// The keys of a ppo config's "ppo" section.
const OptionsSchema<PpoOptions>& ppo_options_schema();

/// The KL coefficient beta: fixed, or Ziegler et al.'s adaptive controller (TRL's
/// AdaptiveKLController): e = clip(KL / target - 1, -0.2, 0.2), beta *= 1 + e * n / horizon,
/// with KL the mean per-response KL of the batch and n the batch's rollouts.
class KlController {
 public:
  KlController(double init, bool adaptive, double target, double horizon)
      : value_(init), adaptive_(adaptive), target_(target), horizon_(horizon) {}
  double value() const { return value_; }
  void update(double current_kl, int64_t n_steps);
  void set_value(double value) { value_ = value; }

 private:
  double value_;
  bool adaptive_;
  double target_, horizon_;
};

/// sum(x * mask) / sum(mask).
at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask);
/// The unbiased masked variance (Bessel-corrected, as TRL's masked_var).
at::Tensor masked_var(const at::Tensor& x, const at::Tensor& mask);
/// (x - mean) / sqrt(var + 1e-8) over the masked entries; the mean is added back unless
/// shift_mean (TRL's masked_whiten).
at::Tensor masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean = true);

/// Per-token KL estimate from log pi and log pi_ref: k1 = logp - ref, k3 = (e^(ref - logp) - 1)
/// - (ref - logp).
at::Tensor kl_estimate(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                       const std::string& estimator);

struct Advantages {
  at::Tensor advantages;  ///< [B, R] whitened, 0 off the mask
  at::Tensor returns;     ///< [B, R] A + V (before whitening)
};

/// GAE over [B, R] per-token rewards and values (both 0 off the mask), then whitening.
Advantages generalized_advantages(const at::Tensor& rewards, const at::Tensor& values,
                                  const at::Tensor& mask, double gamma, double lam);

struct PpoLossTerms {
  at::Tensor pg_loss;      ///< sum over masked tokens of max(-A rho, -A clip(rho))
  at::Tensor vf_loss;      ///< sum over masked tokens of 0.5 max((V - R)^2, (V_clip - R)^2)
  at::Tensor pg_clipfrac;  ///< sum of [clipped term larger]
  at::Tensor vf_clipfrac;
  at::Tensor approxkl;     ///< sum of 0.5 (logp - logp_old)^2
  at::Tensor ratio;        ///< sum of rho
  at::Tensor ratio_sq;     ///< sum of rho^2
  at::Tensor tokens;       ///< sum of the mask
};

/// PPO's clipped surrogate and value losses as sums over the masked tokens (the caller divides
/// by `tokens`; the Trainer does, over a whole minibatch).
PpoLossTerms ppo_loss_terms(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                            const at::Tensor& values, const at::Tensor& old_values,
                            const at::Tensor& advantages, const at::Tensor& returns,
                            const at::Tensor& mask, double cliprange, double cliprange_value);

/// One minibatch of an iteration, as the Trainer sees it.
struct PpoBatch {
  int64_t prompt_length = 0;
  at::Tensor sequences, attention_mask, mask;  ///< mask: [b, R] fp32 response tokens
  at::Tensor old_logprobs, old_values, advantages, returns;
};

/// The PPO loss of a minibatch: count = response tokens, metrics under TRL's names.
class PpoObjective final : public train::Objective<PpoBatch> {
 public:
  PpoObjective(PolicyWithValue model, const PpoOptions& options, double temperature)
      : model_(std::move(model)), options_(options), temperature_(temperature) {}
  int64_t count(const PpoBatch& batch) const override;
  train::LossSum loss(const PpoBatch& batch) override;

 private:
  PolicyWithValue model_;
  PpoOptions options_;
  double temperature_;
};

/// What one iteration did: TRL's metric names ("objective/kl", "objective/scores",
/// "objective/rlhf_reward", "policy/clipfrac_avg", "loss/value_avg", ...) and the group
/// rewards ("reward/group_<k>").
struct PpoIteration {
  int64_t iteration = 0;
  std::map<std::string, double> metrics;
  nlohmann::json aggregator_choice;
  nlohmann::json to_json() const;
};

/// PPO with a value head, a frozen reference and frozen reward models. The policy's optimiser,
/// schedule, clipping and autocast are the Trainer's (`train`); its max_steps should be the
/// number of optimizer steps of the whole run (iterations x epochs x minibatches).
class PpoTrainer {
 public:
  PpoTrainer(PolicyWithValue policy, lm::CausalLM reference, RewardSet rewards,
             std::unique_ptr<RewardAggregator> aggregator, PpoOptions options,
             RolloutOptions rollout, train::TrainerOptions train);

  /// One iteration on these prompts (token ids; options.batch_size of them).
  PpoIteration step(const std::vector<std::vector<int64_t>>& prompts);

  PolicyWithValue policy() const { return policy_; }
  train::Trainer& trainer() { return trainer_; }
  KlController& kl() { return kl_; }
  int64_t iteration() const { return iteration_; }
  void set_iteration(int64_t i) { iteration_ = i; }
  /// The rollout options in use (with the reward normalisation once calibrated), for
  /// checkpoints; set_rollout_options restores them.
  const RolloutOptions& rollout_options() const { return rollout_; }
  void set_rollout_options(RolloutOptions rollout) { rollout_ = std::move(rollout); }

 private:
  PolicyWithValue policy_;
  lm::CausalLM reference_;
  RewardSet rewards_;
  std::unique_ptr<RewardAggregator> aggregator_;
  PpoOptions options_;
  RolloutOptions rollout_;
  train::Trainer trainer_;
  KlController kl_;
  at::Generator generator_;
  int64_t iteration_ = 0;
};

}  // namespace concord::rlhf
