#include "concord/rlhf/maxmin_experiment.h"

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/statistics.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/reward_model.h"
#include "concord/train/batch.h"

namespace concord::rlhf {


const OptionsSchema<MaxMinExperimentOptions>& maxmin_experiment_options_schema() {
  static const OptionsSchema<MaxMinExperimentOptions> schema = [] {
    OptionsSchema<MaxMinExperimentOptions> s("maxmin_experiment");
    s.section("world", &MaxMinExperimentOptions::world, two_group_world_options_schema(),
              "the two-group world: vocabulary, groups, users, pairs")
        .field("seeds", &MaxMinExperimentOptions::seeds, "one whole study per seed")
        .field("hidden_size", &MaxMinExperimentOptions::hidden_size,
               "width of the policy and reward models", opt::at_least(8))
        .field("reference_steps", &MaxMinExperimentOptions::reference_steps,
               "SFT steps of the reference policy", opt::at_least(1))
        .field("reference_lr", &MaxMinExperimentOptions::reference_lr, "its learning rate",
               opt::greater_than(0))
        .section("em", &MaxMinExperimentOptions::em, em_options_schema(),
                 "EM over users (clusters 2)")
        .field("reward_layout", &MaxMinExperimentOptions::reward_layout,
               "EM's reward models: separate backbones or one shared with two heads",
               opt::one_of({"separate", "shared"}))
        .field("reward_lr", &MaxMinExperimentOptions::reward_lr, "reward models' learning rate",
               opt::greater_than(0))
        .field("single_reward_steps", &MaxMinExperimentOptions::single_reward_steps,
               "steps of the reward model trained on pooled labels", opt::at_least(1))
        .section("ppo", &MaxMinExperimentOptions::ppo, ppo_options_schema(), "PPO")
        .field("policy_lr", &MaxMinExperimentOptions::policy_lr, "the policy's learning rate",
               opt::greater_than(0))
        .field("ppo_iterations", &MaxMinExperimentOptions::ppo_iterations,
               "PPO iterations per objective", opt::at_least(1))
        .field("objectives", &MaxMinExperimentOptions::objectives,
               "aggregators PPO is run with (single: the pooled reward model)",
               opt::one_of({"single", "min", "argmin_group", "softmin", "mean"}))
        .field("eval_prompts", &MaxMinExperimentOptions::eval_prompts,
               "held-out prompts for the win rates", opt::at_least(1))
        .field("eval_samples", &MaxMinExperimentOptions::eval_samples,
               "responses per prompt and policy", opt::at_least(1));
    return s;
  }();
  return schema;
}

namespace {

lm::CausalLM clone_lm(const lm::CausalLM& m) {
  return lm::CausalLM(std::dynamic_pointer_cast<lm::CausalLMImpl>(m->clone()));
}

// A reward model whose backbone starts from the reference policy (as reward models start from
// the SFT model), with fresh heads.
RewardModel reward_from(const lm::CausalLM& reference, int64_t heads, int64_t hidden) {
  torch::NoGradGuard no_grad;
  return RewardModel(clone_lm(reference), at::randn({heads, hidden}) * 0.02);
}

train::TrainerOptions adam(double lr, int64_t steps) {
  train::TrainerOptions t;
  t.max_steps = steps;
  t.optimizer.lr = lr;
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "constant";
  t.progress = false;
  return t;
}

// One reward model on every pair: the conventional, single-reward RLHF baseline.
RewardSet pooled_reward(const lm::CausalLM& reference, const data::PreferenceDataset& data,
                        const MaxMinExperimentOptions& o, uint64_t seed) {
  RewardSet set = RewardSet::shared(reward_from(reference, 1, o.hidden_size));
  BradleyTerryObjective objective(set);
  data::SamplerOptions so;
  so.batch_size = o.em.batch_size;
  so.seed = seed;
  train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> source(data, so);
  train::Trainer trainer(set.named_modules(), adam(o.reward_lr, o.single_reward_steps));
  trainer.fit(objective, source);
  set.train(false);
  return set;
}

struct GroupStats {
  std::vector<double> win, reward;
  std::vector<uint64_t> seeds;
};

nlohmann::json summarise(const std::map<std::string, GroupStats>& groups) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [group, s] : groups) {
    nlohmann::json per_seed = nlohmann::json::array();
    for (size_t i = 0; i < s.win.size(); ++i) {
      per_seed.push_back({{"seed", s.seeds[i]}, {"win_rate", s.win[i]},
                          {"mean_true_reward", s.reward[i]}});
    }
    const SeedSummary win = summarize_over_seeds(s.win, s.seeds);
    const SeedSummary reward = summarize_over_seeds(s.reward, s.seeds);
    out[group] = {{"win_rate", win.mean},
                  {"mean_true_reward", reward.mean},
                  {"per_seed", per_seed},
                  {"stats", {{"win_rate", win.to_json()}, {"mean_true_reward", reward.to_json()}}}};
  }
  return out;
}

}  // namespace

nlohmann::json run_maxmin_experiment(const MaxMinExperimentOptions& o,
                                     const MaxMinCallbacks& callbacks) {
  maxmin_experiment_options_schema().validate(o, "maxmin_experiment");
  CONCORD_CHECK(o.em.clusters == 2, "maxmin_experiment: em.clusters must be 2 (two planted groups)");
  CONCORD_CHECK(!o.seeds.empty(), "maxmin_experiment: no seeds");
  auto progress = [&](uint64_t seed, const std::string& stage, const std::string& detail) {
    if (callbacks.progress) callbacks.progress(seed, stage, detail);
  };
  std::map<std::string, std::map<std::string, GroupStats>> results;  // objective -> group
  nlohmann::json em_per_seed = nlohmann::json::array();
  std::vector<double> purities, nmis;
  std::vector<uint64_t> em_seeds;

  for (int64_t seed_value : o.seeds) {
    const auto seed = static_cast<uint64_t>(seed_value);
    TwoGroupWorldOptions world = o.world;
    world.seed = seed;
    torch::manual_seed(seed);
    lm::CausalLM reference(world_model_config(world, o.hidden_size));
    const double sft_loss = train_reference_policy(reference, world, o.reference_steps,
                                                   o.reference_lr, seed);
    progress(seed, "reference", "SFT loss " + std::to_string(sft_loss));
    const data::PreferenceDataset data = sample_preferences(reference, world, seed);

    // EM over users, from the reference's weights.
    RewardSet mixture =
        o.reward_layout == "shared"
            ? RewardSet::shared(reward_from(reference, 2, o.hidden_size))
            : RewardSet::separate({reward_from(reference, 1, o.hidden_size),
                                   reward_from(reference, 1, o.hidden_size)});
    EmOptions em = o.em;
    em.seed = seed;
    const EmResult fit = fit_reward_mixture(
        mixture, data, em, adam(o.reward_lr, em.m_step_steps), {},
        [&](const EmIteration& it) {
          progress(seed, "em", "iteration " + std::to_string(it.iteration) + ": log-likelihood/pair " +
                                   std::to_string(it.log_likelihood_per_pair));
        });
    const double purity = fit.purity.value_or(0.0), nmi = fit.nmi.value_or(0.0);
    purities.push_back(purity);
    nmis.push_back(nmi);
    em_seeds.push_back(seed);
    em_per_seed.push_back({{"seed", seed},
                           {"purity", purity},
                           {"nmi", nmi},
                           {"pairs", data.size()},
                           {"iterations", fit.history.size()},
                           {"cluster_sizes", fit.history.back().sizes},
                           {"cluster_accuracy", fit.cluster_accuracy},
                           {"log_likelihood_per_pair", fit.log_likelihood_per_pair}});
    const RewardSet single = pooled_reward(reference, data, o, seed);

    const auto eval_prompts = world_prompts(world, o.eval_prompts, seed + 7777);
    const auto ref_scores = evaluate_against_reference(reference, reference, eval_prompts, world,
                                                       seed + 99, o.eval_samples);
    for (const auto& [group, score] : ref_scores) {
      auto& g = results["reference"][group];
      g.win.push_back(score.win_rate);
      g.reward.push_back(score.mean_true_reward);
      g.seeds.push_back(seed);
    }
    for (const auto& objective : o.objectives) {
      torch::manual_seed(seed + 31);
      PolicyWithValue policy(clone_lm(reference));
      PpoOptions ppo = o.ppo;
      ppo.seed = seed;
      RolloutOptions rollout;
      rollout.generation = world_generation(world, seed);
      const int64_t steps = o.ppo_iterations * ppo.ppo_epochs * (ppo.batch_size / ppo.mini_batch_size);
      AggregatorOptions agg;
      agg.name = objective;
      const bool pooled = objective == "single";
      PpoTrainer trainer(policy, reference, pooled ? single : mixture, make_aggregator(agg), ppo,
                         rollout, adam(o.policy_lr, steps));
      for (int64_t i = 0; i < o.ppo_iterations; ++i) {
        const auto prompts = world_prompts(world, ppo.batch_size,
                                           seed * 1000003ULL + static_cast<uint64_t>(i));
        const PpoIteration it = trainer.step(prompts);
        if (callbacks.metrics) {
          nlohmann::json record = it.to_json();
          record["seed"] = seed;
          record["objective"] = objective;
          record["step"] = it.iteration;
          callbacks.metrics(record);
        }
      }
      const auto scores = evaluate_against_reference(policy->policy, reference, eval_prompts,
                                                     world, seed + 99, o.eval_samples);
      std::string detail;
      for (const auto& [group, score] : scores) {
        auto& g = results[objective][group];
        g.win.push_back(score.win_rate);
        g.reward.push_back(score.mean_true_reward);
        g.seeds.push_back(seed);
        detail += group + " win " + std::to_string(score.win_rate) + " ";
      }
      progress(seed, "ppo:" + objective, detail);
    }
  }
  nlohmann::json out;
  const SeedSummary purity = summarize_over_seeds(purities, em_seeds);
  const SeedSummary nmi = summarize_over_seeds(nmis, em_seeds);
  out["em"] = {{"purity", purity.mean},
               {"nmi", nmi.mean},
               {"per_seed", em_per_seed},
               {"stats", {{"purity", purity.to_json()}, {"nmi", nmi.to_json()}}}};
  for (const auto& [objective, groups] : results) out[objective] = summarise(groups);
  out["config"] = maxmin_experiment_options_schema().to_json(o);
  return out;
}

}  // namespace concord::rlhf
