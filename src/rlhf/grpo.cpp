#include "concord/rlhf/grpo.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/rlhf/policy.h"
#include "concord/rlhf/ppo.h"

namespace concord::rlhf {

const OptionsSchema<GrpoOptions>& grpo_options_schema() {
  static const OptionsSchema<GrpoOptions> schema = [] {
    OptionsSchema<GrpoOptions> s("grpo");
    s.field("batch_size", &GrpoOptions::batch_size, "prompts per iteration", opt::at_least(1))
        .field("num_generations", &GrpoOptions::num_generations, "G: responses per prompt",
               opt::at_least(2))
        .field("mini_batch_size", &GrpoOptions::mini_batch_size, "responses per optimizer step",
               opt::at_least(1))
        .field("num_iterations", &GrpoOptions::num_iterations, "passes over each rollout batch",
               opt::at_least(1))
        .field("beta", &GrpoOptions::beta, "KL coefficient", opt::at_least(0))
        .field("epsilon", &GrpoOptions::epsilon, "ratio clip", opt::greater_than(0))
        .field("scale_rewards", &GrpoOptions::scale_rewards,
               "divide advantages by the group's standard deviation")
        .field("loss_type", &GrpoOptions::loss_type,
               "grpo: mean over each response, then responses; token: mean over tokens",
               opt::one_of({"grpo", "token"}))
        .field("normalize_rewards", &GrpoOptions::normalize_rewards,
               "z-score each reward model on the first iteration's responses before aggregating")
        .field("seed", &GrpoOptions::seed, "sampling and shuffling");
    return s;
  }();
  return schema;
}

at::Tensor group_relative_advantages(const at::Tensor& scores, int64_t group_size, bool scale) {
  CONCORD_CHECK(scores.dim() == 1 && group_size >= 1 && scores.size(0) % group_size == 0,
                "group_relative_advantages: ", scores.size(0), " scores in groups of ", group_size);
  const at::Tensor g = scores.to(at::kFloat).view({-1, group_size});
  at::Tensor a = g - g.mean(1, /*keepdim=*/true);
  if (scale) a = a / (g.std(1, /*unbiased=*/true, /*keepdim=*/true) + 1e-4);
  return a.reshape({-1});
}

at::Tensor grpo_per_token_loss(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                               const at::Tensor& ref_logprobs, const at::Tensor& advantages,
                               double epsilon, double beta) {
  const at::Tensor ratio = at::exp(logprobs - old_logprobs);
  const at::Tensor a = advantages.unsqueeze(1);
  const at::Tensor clipped = at::clamp(ratio, 1.0 - epsilon, 1.0 + epsilon);
  at::Tensor loss = -at::minimum(ratio * a, clipped * a);
  if (beta > 0) loss = loss + beta * kl_estimate(logprobs, ref_logprobs, "k3");
  return loss;
}

int64_t GrpoObjective::count(const GrpoBatch& b) const {
  if (options_.loss_type == "token") return static_cast<int64_t>(b.mask.sum().item<double>());
  return b.sequences.size(0);
}

train::LossSum GrpoObjective::loss(const GrpoBatch& b) {
  const ResponseOutputs out =
      response_outputs(policy_, b.sequences, b.attention_mask, b.prompt_length, temperature_, false,
                       nullptr, share_prompts_);
  const at::Tensor per_token =
      grpo_per_token_loss(out.logprobs, b.old_logprobs, b.ref_logprobs, b.advantages,
                          options_.epsilon, options_.beta) * b.mask;
  const at::Tensor ratio = at::exp(out.logprobs.detach() - b.old_logprobs);
  const at::Tensor a = b.advantages.unsqueeze(1);
  at::Tensor kl;
  if (options_.beta > 0) kl = kl_estimate(out.logprobs.detach(), b.ref_logprobs, "k3");
  const at::Tensor lengths = b.mask.sum(1).clamp_min(1);
  train::LossSum s;
  s.sum = options_.loss_type == "token" ? per_token.sum() : (per_token.sum(1) / lengths).sum();
  const double tokens = b.mask.sum().item<double>();
  const at::Tensor is_clipped = ((ratio < 1.0 - options_.epsilon) & (a < 0)) |
                                ((ratio > 1.0 + options_.epsilon) & (a > 0));
  s.metrics["clip_ratio"] = {(is_clipped.to(at::kFloat) * b.mask).sum().item<double>(), tokens};
  if (kl.defined()) s.metrics["kl"] = {(kl.detach() * b.mask).sum().item<double>(), tokens};
  return s;
}

nlohmann::json GrpoIteration::to_json() const {
  nlohmann::json j = {{"iteration", iteration}};
  for (const auto& [k, v] : metrics) j[k] = v;
  if (!aggregator_choice.is_null()) j["aggregator/choice"] = aggregator_choice;
  return j;
}

GrpoTrainer::GrpoTrainer(lm::CausalLM policy, lm::CausalLM reference, RewardSet rewards,
                         std::unique_ptr<RewardAggregator> aggregator, GrpoOptions options,
                         RolloutOptions rollout, train::TrainerOptions train)
    : policy_(std::move(policy)),
      reference_(std::move(reference)),
      rewards_(std::move(rewards)),
      aggregator_(std::move(aggregator)),
      options_(std::move(options)),
      rollout_(std::move(rollout)),
      trainer_({{"policy", policy_.ptr()}}, train) {
  grpo_options_schema().validate(options_, "grpo options");
  CONCORD_CHECK(aggregator_ != nullptr, "GrpoTrainer: no aggregator");
  CONCORD_CHECK(rollout_.generation.do_sample, "grpo: sampling must be on (generation.do_sample), "
                "or every response of a group is the same");
  reference_->eval();
  rewards_.train(false);
  if (policy_->embed->weight.device().is_cpu()) {
    generator_ = at::detail::createCPUGenerator(options_.seed);
  }
}

GrpoIteration GrpoTrainer::step(const std::vector<std::vector<int64_t>>& prompts) {
  CONCORD_CHECK(static_cast<int64_t>(prompts.size()) == options_.batch_size, "grpo: ",
                prompts.size(), " prompts for a batch of ", options_.batch_size);
  ++iteration_;
  // Sampling and shuffling draw from (seed, iteration): a resumed run repeats the same rollouts.
  if (generator_.defined()) generator_.set_current_seed(options_.seed * 1000003ULL + static_cast<uint64_t>(iteration_));
  const int64_t G = options_.num_generations;
  Rollout r = collect_rollout(policy_, reference_, rewards_, *aggregator_, prompts, rollout_,
                              generator_, G);
  if (options_.normalize_rewards && !rollout_.reward_mean.defined()) {
    std::tie(rollout_.reward_mean, rollout_.reward_std) = reward_statistics(r.group_rewards);
    r.scores = aggregate_scores(r.group_rewards, r.ended, *aggregator_, rollout_);
  }
  const double temperature = rollout_.generation.temperature;
  const at::Tensor adv = group_relative_advantages(r.scores, G, options_.scale_rewards)
                             .to(r.sequences.device());
  GrpoIteration it;
  it.iteration = iteration_;
  it.aggregator_choice = aggregator_->last_choice();
  it.metrics["reward"] = r.scores.mean().item<double>();
  it.metrics["reward_std"] = r.scores.view({-1, G}).std(1).mean().item<double>();
  it.metrics["completions/mean_length"] = r.response_mask.sum(1).mean().item<double>();
  for (int64_t k = 0; k < r.group_rewards.size(1); ++k) {
    it.metrics["reward/group_" + std::to_string(k)] = r.group_rewards.select(1, k).mean().item<double>();
  }
  GrpoObjective objective(policy_, options_, temperature, rollout_.generation.share_prompts);
  const int64_t N = r.sequences.size(0), mb = options_.mini_batch_size;
  train::Metrics sums;
  const c10::Device device = r.sequences.device();
  for (int64_t pass = 0; pass < options_.num_iterations; ++pass) {
    const at::Tensor perm = generator_.defined() ? at::randperm(N, generator_, at::kLong)
                                                 : at::randperm(N, at::TensorOptions().dtype(at::kLong));
    for (int64_t start = 0; start < N; start += mb) {
      const at::Tensor rows = perm.narrow(0, start, std::min(mb, N - start)).to(device);
      GrpoBatch b;
      b.prompt_length = r.prompt_length;
      b.sequences = r.sequences.index_select(0, rows);
      b.attention_mask = r.attention_mask.index_select(0, rows);
      b.mask = r.response_mask.index_select(0, rows);
      b.old_logprobs = r.logprobs.index_select(0, rows);
      b.ref_logprobs = r.ref_logprobs.index_select(0, rows);
      b.advantages = adv.index_select(0, rows);
      const train::StepStats stats = trainer_.train_step(objective, std::vector<GrpoBatch>{b});
      train::accumulate(sums, stats.metrics);
      it.metrics["loss"] = stats.loss;
    }
  }
  for (const auto& [name, m] : sums) it.metrics[name] = m.value();
  return it;
}

}  // namespace concord::rlhf
