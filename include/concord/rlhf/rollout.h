// One batch of experience for PPO and GRPO: prompts continued by the policy (lm::generate_tensors,
// on the policy's device), the log-probs of the sampled tokens, the frozen reference's log-probs
// of the same tokens, and the scores: the K group rewards of every response, combined into one
// scalar by an aggregator (aggregate.h). Everything stays in tensors on the device.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/reward_model.h"

namespace concord::rlhf {

struct Rollout {
  int64_t prompt_length = 0;  ///< P: columns of the left-padded prompts
  at::Tensor sequences;       ///< [B, P + R]
  at::Tensor attention_mask;  ///< [B, P + R]
  at::Tensor response_mask;   ///< [B, R] fp32: 1 on response tokens (the stop token included)
  at::Tensor logprobs;        ///< [B, R] the policy's, at sampling time
  at::Tensor ref_logprobs;    ///< [B, R] the reference's
  at::Tensor group_rewards;   ///< [B, K] each reward model's raw score
  at::Tensor scores;          ///< [B] the aggregated score (after any missing-EOS penalty)
  at::Tensor ended;           ///< [B] bool: the response ends with a stop token
};

/// Left-pads token-id prompts into [B, P] ids and mask.
std::pair<at::Tensor, at::Tensor> pad_prompts_left(const std::vector<std::vector<int64_t>>& prompts,
                                                   int64_t pad_id);

struct RolloutOptions {
  lm::GenerationOptions generation;  ///< sampling (do_sample true for RL), max_new_tokens
  /// Subtracted from the score of a response that never emitted a stop token (TRL's
  /// missing_eos_penalty); 0: none.
  double missing_eos_penalty = 0.0;
  /// Per reward model, (r_k - reward_mean[k]) / reward_std[k] is what the aggregator combines
  /// (undefined: raw rewards). Bradley-Terry rewards are defined only up to a shift and a scale
  /// per model, so comparing two models' rewards (min, argmin_group) needs a common unit; the
  /// policy optimisers calibrate these on the reference policy's responses (normalize_rewards).
  at::Tensor reward_mean, reward_std;
};

/// The aggregated scores [B] of raw group rewards [B, K]: normalised as `options` says, combined,
/// less the missing-EOS penalty where `ended` is false.
at::Tensor aggregate_scores(const at::Tensor& group_rewards, const at::Tensor& ended,
                            RewardAggregator& aggregator, const RolloutOptions& options);

/// Mean and standard deviation (floored at 1e-6) of each column of group rewards [B, K].
std::pair<at::Tensor, at::Tensor> reward_statistics(const at::Tensor& group_rewards);

/// Samples `prompts` (each repeated `repeats` times in a row, for GRPO's groups) with `policy`,
/// scores them with `rewards` through `aggregator`, and reads the reference's log-probs.
Rollout collect_rollout(lm::CausalLM policy, lm::CausalLM reference, RewardSet& rewards,
                        RewardAggregator& aggregator,
                        const std::vector<std::vector<int64_t>>& prompts,
                        const RolloutOptions& options, at::Generator generator = {},
                        int64_t repeats = 1);

}  // namespace concord::rlhf
