// The MaxMin-RLHF result in miniature (the paper's small-scale GPT-2 study, offline and reproducible on a
// CPU): in the two-group world of synthetic.h (a majority that likes planted words, a minority
// that likes concise responses, 10 : 1),
//
//   1. a reference policy is trained by SFT on random responses;
//   2. users label pairs of its samples by Bradley-Terry on their group's true reward;
//   3. EM (em.h) learns K = 2 reward models over users from those labels alone: purity and NMI
//      against the planted groups say whether it recovered them;
//   4. one reward model is trained on the pooled labels (conventional RLHF);
//   5. PPO runs from the reference once per objective: `single` (the pooled reward model),
//      `min` (per-sample minimum of the EM reward models, the public code) and `argmin_group`
//      (the worst-off group's reward each iteration, the paper's Algorithm 1);
//   6. each policy is scored against the reference with the groups' TRUE rewards: win rate
//      (its response beats the reference's, ties half) and mean true reward, per group.
//
// Every step is seeded; `seeds` repeats the whole study and reports means, 95% intervals over
// seeds and per-seed values.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/rlhf/em.h"
#include "concord/rlhf/ppo.h"
#include "concord/rlhf/synthetic.h"
#include "concord/train/trainer.h"

namespace concord::rlhf {

struct MaxMinExperimentOptions {
  TwoGroupWorldOptions world;
  std::vector<int64_t> seeds{1, 2, 3};
  int64_t hidden_size = 32;            ///< width of the policy and reward models
  int64_t reference_steps = 200;       ///< SFT steps of the reference policy
  double reference_lr = 1e-2;
  EmOptions em = [] {                  ///< clusters is 2
    EmOptions e;
    e.init = "kmeans++";
    e.max_iterations = 5;
    e.m_step_steps = 60;
    return e;
  }();
  std::string reward_layout = "separate";  ///< EM's reward models: separate | shared
  double reward_lr = 3e-3;             ///< the reward models' learning rate (M-step, single)
  int64_t single_reward_steps = 200;   ///< steps of the pooled reward model
  PpoOptions ppo = [] {
    PpoOptions p;
    p.batch_size = 16;
    p.mini_batch_size = 8;
    p.ppo_epochs = 2;
    p.init_kl_coef = 0.05;
    p.normalize_rewards = true;  // min and argmin_group compare two models' rewards
    return p;
  }();
  double policy_lr = 3e-3;
  int64_t ppo_iterations = 40;
  std::vector<std::string> objectives{"single", "min", "argmin_group"};
  int64_t eval_prompts = 64;           ///< held-out prompts for the win rates
  int64_t eval_samples = 4;            ///< responses per prompt and policy
};

const OptionsSchema<MaxMinExperimentOptions>& maxmin_experiment_options_schema();

/// Progress: (seed, stage, detail) as the study moves ("em", "ppo:min", ...), and the per-
/// iteration PPO metrics (with "seed" and "objective" added) for the caller's metrics file.
struct MaxMinCallbacks {
  std::function<void(uint64_t seed, const std::string& stage, const std::string& detail)> progress;
  std::function<void(const nlohmann::json& record)> metrics;
};

/// Runs the study; returns results.json's object:
///   em: {purity, nmi, per_seed: [{seed, purity, nmi, cluster_sizes, ...}],
///        stats: {purity: S, nmi: S}}
///   reference, <objective>: {majority: {win_rate, mean_true_reward,
///                                       per_seed: [{seed, win_rate, mean_true_reward}],
///                                       stats: {win_rate: S, mean_true_reward: S}},
///                            minority: {...}}
///   config: the options
/// The bare numbers (purity, nmi, win_rate, mean_true_reward) are means over seeds; each S is
/// that figure's SeedSummary::to_json() (core/statistics.h): {mean, stddev, ci_low, ci_high,
/// seeds, per_seed: [values]}, with a 95% Student-t interval (null with one seed).
nlohmann::json run_maxmin_experiment(const MaxMinExperimentOptions& options,
                                     const MaxMinCallbacks& callbacks = {});

}  // namespace concord::rlhf
