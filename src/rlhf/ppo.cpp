#include "concord/rlhf/ppo.h"

#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"

namespace concord::rlhf {

const OptionsSchema<PpoOptions>& ppo_options_schema() {
  static const OptionsSchema<PpoOptions> schema = [] {
    OptionsSchema<PpoOptions> s("ppo");
    s.field("batch_size", &PpoOptions::batch_size, "rollouts per iteration", opt::at_least(1))
        .field("mini_batch_size", &PpoOptions::mini_batch_size, "rollouts per optimizer step",
               opt::at_least(1))
        .field("ppo_epochs", &PpoOptions::ppo_epochs, "passes over the rollouts per iteration",
               opt::at_least(1))
        .field("init_kl_coef", &PpoOptions::init_kl_coef, "KL coefficient beta at the start",
               opt::at_least(0))
        .field("adaptive_kl", &PpoOptions::adaptive_kl, "adapt beta towards `target`")
        .field("target", &PpoOptions::target, "the adaptive controller's target KL",
               opt::greater_than(0))
        .field("horizon", &PpoOptions::horizon, "the adaptive controller's horizon",
               opt::greater_than(0))
        .field("kl_estimator", &PpoOptions::kl_estimator, "k1 (log ratio) or k3",
               opt::one_of({"k1", "k3"}))
        .field("gamma", &PpoOptions::gamma, "discount", opt::at_least(0), opt::at_most(1))
        .field("lam", &PpoOptions::lam, "GAE lambda", opt::at_least(0), opt::at_most(1))
        .field("cliprange", &PpoOptions::cliprange, "policy ratio clip", opt::greater_than(0))
        .field("cliprange_value", &PpoOptions::cliprange_value, "value clip", opt::greater_than(0))
        .field("vf_coef", &PpoOptions::vf_coef, "weight of the value loss", opt::at_least(0))
        .field("whiten_rewards", &PpoOptions::whiten_rewards, "whiten per-token rewards before GAE")
        .field("early_stopping", &PpoOptions::early_stopping,
               "stop an iteration's epochs when approx KL > 1.5 target_kl")
        .field("target_kl", &PpoOptions::target_kl, "early stopping's KL", opt::greater_than(0))
        .field("missing_eos_penalty", &PpoOptions::missing_eos_penalty,
               "subtracted from the score of a response without a stop token", opt::at_least(0))
        .field("normalize_rewards", &PpoOptions::normalize_rewards,
               "z-score each reward model on the first iteration's responses before aggregating")
        .field("seed", &PpoOptions::seed, "rollout sampling and minibatch shuffling");
    return s;
  }();
  return schema;
}

void KlController::update(double current_kl, int64_t n_steps) {
  if (!adaptive_) return;
  const double error = std::clamp(current_kl / target_ - 1.0, -0.2, 0.2);
  value_ *= 1.0 + error * static_cast<double>(n_steps) / horizon_;
}

at::Tensor masked_mean(const at::Tensor& x, const at::Tensor& mask) {
  return (x * mask).sum() / mask.sum();
}

at::Tensor masked_var(const at::Tensor& x, const at::Tensor& mask) {
  const at::Tensor mean = masked_mean(x, mask);
  const at::Tensor centred = x - mean;
  const at::Tensor var = masked_mean(centred * centred, mask);
  const at::Tensor n = mask.sum();
  CONCORD_CHECK(n.item<double>() > 1, "masked_var: needs more than one masked entry");
  return var * (n / (n - 1));
}

at::Tensor masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean) {
  const at::Tensor mean = masked_mean(x, mask);
  const at::Tensor var = masked_var(x, mask);
  at::Tensor w = (x - mean) * at::rsqrt(var + 1e-8);
  if (!shift_mean) w = w + mean;
  return w;
}

at::Tensor kl_estimate(const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                       const std::string& estimator) {
  const at::Tensor logr = ref_logprobs - logprobs;  // log(pi_ref / pi)
  if (estimator == "k1") return -logr;
  CONCORD_CHECK(estimator == "k3", "kl_estimate: unknown estimator '", estimator, "' (k1, k3)");
  return at::expm1(logr) - logr;
}

Advantages generalized_advantages(const at::Tensor& rewards, const at::Tensor& values,
                                  const at::Tensor& mask, double gamma, double lam) {
  const int64_t R = rewards.size(1);
  at::Tensor last = at::zeros({rewards.size(0)}, rewards.options());
  std::vector<at::Tensor> reversed;
  for (int64_t t = R - 1; t >= 0; --t) {
    const at::Tensor next_value = t + 1 < R ? values.select(1, t + 1) : at::zeros_like(last);
    const at::Tensor delta = rewards.select(1, t) + gamma * next_value - values.select(1, t);
    last = delta + gamma * lam * last;
    reversed.push_back(last);
  }
  std::reverse(reversed.begin(), reversed.end());
  const at::Tensor adv = at::stack(reversed, 1);
  Advantages out;
  out.returns = adv + values;
  out.advantages = masked_whiten(adv, mask) * mask;
  return out;
}

PpoLossTerms ppo_loss_terms(const at::Tensor& logprobs, const at::Tensor& old_logprobs,
                            const at::Tensor& values, const at::Tensor& old_values,
                            const at::Tensor& advantages, const at::Tensor& returns,
                            const at::Tensor& mask, double cliprange, double cliprange_value) {
  PpoLossTerms t;
  const at::Tensor vclipped =
      at::clamp(values, old_values - cliprange_value, old_values + cliprange_value);
  const at::Tensor vf1 = (values - returns).pow(2);
  const at::Tensor vf2 = (vclipped - returns).pow(2);
  t.vf_loss = (0.5 * at::maximum(vf1, vf2) * mask).sum();
  t.vf_clipfrac = ((vf2 > vf1).to(at::kFloat) * mask).sum();
  const at::Tensor diff = logprobs - old_logprobs;
  const at::Tensor ratio = at::exp(diff);
  const at::Tensor pg1 = -advantages * ratio;
  const at::Tensor pg2 = -advantages * at::clamp(ratio, 1.0 - cliprange, 1.0 + cliprange);
  t.pg_loss = (at::maximum(pg1, pg2) * mask).sum();
  t.pg_clipfrac = ((pg2 > pg1).to(at::kFloat) * mask).sum();
  t.approxkl = (0.5 * diff.pow(2) * mask).sum();
  t.ratio = (ratio * mask).sum();
  t.ratio_sq = (ratio.pow(2) * mask).sum();
  t.tokens = mask.sum();
  return t;
}

int64_t PpoObjective::count(const PpoBatch& batch) const {
  return static_cast<int64_t>(batch.mask.sum().item<double>());
}

train::LossSum PpoObjective::loss(const PpoBatch& b) {
  const ResponseOutputs out = response_outputs(model_->policy, b.sequences, b.attention_mask,
                                               b.prompt_length, temperature_, /*entropy=*/true,
                                               model_->value_head);
  const PpoLossTerms t =
      ppo_loss_terms(out.logprobs, b.old_logprobs, out.values, b.old_values, b.advantages,
                     b.returns, b.mask, options_.cliprange, options_.cliprange_value);
  train::LossSum s;
  s.sum = t.pg_loss + options_.vf_coef * t.vf_loss;
  const double n = t.tokens.item<double>();
  auto metric = [&](const char* name, const at::Tensor& sum) {
    s.metrics[name] = {sum.detach().item<double>(), n};
  };
  metric("loss/policy_avg", t.pg_loss);
  metric("loss/value_avg", t.vf_loss);
  metric("policy/clipfrac_avg", t.pg_clipfrac);
  metric("val/clipfrac_avg", t.vf_clipfrac);
  metric("policy/approxkl_avg", t.approxkl);
  metric("policy/entropy_avg", (out.entropy * b.mask).sum());
  metric("val/ratio", t.ratio);
  metric("val/ratio_sq", t.ratio_sq);
  return s;
}

nlohmann::json PpoIteration::to_json() const {
  nlohmann::json j = {{"iteration", iteration}};
  for (const auto& [k, v] : metrics) j[k] = v;
  if (!aggregator_choice.is_null()) j["aggregator/choice"] = aggregator_choice;
  return j;
}

PpoTrainer::PpoTrainer(PolicyWithValue policy, lm::CausalLM reference, RewardSet rewards,
                       std::unique_ptr<RewardAggregator> aggregator, PpoOptions options,
                       RolloutOptions rollout, train::TrainerOptions train)
    : policy_(std::move(policy)),
      reference_(std::move(reference)),
      rewards_(std::move(rewards)),
      aggregator_(std::move(aggregator)),
      options_(std::move(options)),
      rollout_(std::move(rollout)),
      trainer_({{"policy", policy_.ptr()}}, train),
      kl_(options_.init_kl_coef, options_.adaptive_kl, options_.target, options_.horizon) {
  ppo_options_schema().validate(options_, "ppo options");
  CONCORD_CHECK(aggregator_ != nullptr, "PpoTrainer: no aggregator");
  CONCORD_CHECK(options_.batch_size % options_.mini_batch_size == 0, "ppo: batch_size (",
                options_.batch_size, ") must be a multiple of mini_batch_size (",
                options_.mini_batch_size, ")");
  reference_->eval();
  rewards_.train(false);
  rollout_.missing_eos_penalty = options_.missing_eos_penalty;
  if (policy_->policy->embed->weight.device().is_cpu()) {
    generator_ = at::detail::createCPUGenerator(options_.seed);
  }
}

PpoIteration PpoTrainer::step(const std::vector<std::vector<int64_t>>& prompts) {
  CONCORD_CHECK(static_cast<int64_t>(prompts.size()) == options_.batch_size, "ppo: ",
                prompts.size(), " prompts for a batch of ", options_.batch_size);
  ++iteration_;
  // Sampling and shuffling draw from (seed, iteration): a resumed run repeats the same rollouts.
  if (generator_.defined()) generator_.set_current_seed(options_.seed * 1000003ULL + static_cast<uint64_t>(iteration_));
  Rollout r = collect_rollout(policy_->policy, reference_, rewards_, *aggregator_, prompts,
                              rollout_, generator_);
  if (options_.normalize_rewards && !rollout_.reward_mean.defined()) {
    std::tie(rollout_.reward_mean, rollout_.reward_std) = reward_statistics(r.group_rewards);
    r.scores = aggregate_scores(r.group_rewards, r.ended, *aggregator_, rollout_);
  }
  const double temperature = rollout_.generation.do_sample ? rollout_.generation.temperature : 1.0;
  const at::Tensor& mask = r.response_mask;
  at::Tensor old_logprobs, values;
  {
    c10::InferenceMode guard;
    const ResponseOutputs o = response_outputs(policy_->policy, r.sequences, r.attention_mask,
                                               r.prompt_length, temperature, false,
                                               policy_->value_head);
    old_logprobs = o.logprobs * mask;
    values = o.values * mask;
  }
  at::Tensor kl, non_score, rewards;
  Advantages adv;
  {
    c10::InferenceMode guard;
    kl = kl_estimate(old_logprobs, r.ref_logprobs, options_.kl_estimator) * mask;
    non_score = -kl_.value() * kl;
    const at::Tensor last = (mask.sum(1) - 1).to(at::kLong).clamp_min(0);
    rewards = non_score.scatter_add(1, last.unsqueeze(1), r.scores.unsqueeze(1).to(non_score.dtype()));
    if (options_.whiten_rewards) rewards = masked_whiten(rewards, mask, false) * mask;
    adv = generalized_advantages(rewards, values, mask, options_.gamma, options_.lam);
  }
  PpoIteration it;
  it.iteration = iteration_;
  it.aggregator_choice = aggregator_->last_choice();
  const double mean_kl = kl.sum(1).mean().item<double>();
  const double non_score_mean = non_score.sum(1).mean().item<double>();
  it.metrics["objective/kl"] = mean_kl;
  it.metrics["objective/entropy"] = (-old_logprobs).sum(1).mean().item<double>();
  it.metrics["objective/non_score_reward"] = non_score_mean;
  it.metrics["objective/scores"] = r.scores.mean().item<double>();
  it.metrics["objective/rlhf_reward"] = r.scores.mean().item<double>() + non_score_mean;
  it.metrics["objective/kl_coef"] = kl_.value();
  it.metrics["val/num_eos_tokens"] = r.ended.sum().item<double>();
  it.metrics["response/length"] = mask.sum(1).mean().item<double>();
  for (int64_t k = 0; k < r.group_rewards.size(1); ++k) {
    it.metrics["reward/group_" + std::to_string(k)] = r.group_rewards.select(1, k).mean().item<double>();
  }

  // Update: ppo_epochs passes over shuffled minibatches, one optimizer step each.
  PpoObjective objective(policy_, options_, temperature);
  const int64_t B = options_.batch_size, mb = options_.mini_batch_size;
  const int64_t accum = std::max<int64_t>(1, trainer_.options().grad_accum_steps);
  train::Metrics sums;
  int64_t steps = 0;
  bool stopped = false;
  const c10::Device device = r.sequences.device();
  for (int64_t epoch = 0; epoch < options_.ppo_epochs && !stopped; ++epoch) {
    const at::Tensor perm = generator_.defined() ? at::randperm(B, generator_, at::kLong)
                                                 : at::randperm(B, at::TensorOptions().dtype(at::kLong));
    for (int64_t start = 0; start < B; start += mb) {
      std::vector<PpoBatch> micro;
      const int64_t per = std::max<int64_t>(1, mb / accum);
      for (int64_t m = start; m < start + mb; m += per) {
        const at::Tensor rows = perm.narrow(0, m, std::min(per, start + mb - m)).to(device);
        PpoBatch b;
        b.prompt_length = r.prompt_length;
        b.sequences = r.sequences.index_select(0, rows);
        b.attention_mask = r.attention_mask.index_select(0, rows);
        b.mask = mask.index_select(0, rows);
        b.old_logprobs = old_logprobs.index_select(0, rows);
        b.old_values = values.index_select(0, rows);
        b.advantages = adv.advantages.index_select(0, rows);
        b.returns = adv.returns.index_select(0, rows);
        micro.push_back(std::move(b));
      }
      const train::StepStats stats = trainer_.train_step(objective, std::move(micro));
      train::accumulate(sums, stats.metrics);
      ++steps;
      it.metrics["lr"] = stats.lr;
    }
    if (options_.early_stopping &&
        sums["policy/approxkl_avg"].value() > 1.5 * options_.target_kl) {
      stopped = true;
    }
  }
  for (const auto& [name, m] : sums) {
    if (name == "val/ratio_sq") continue;
    it.metrics[name] = m.value();
  }
  const double ratio = sums["val/ratio"].value();
  it.metrics["val/ratio_var"] = sums["val/ratio_sq"].value() - ratio * ratio;
  it.metrics["ppo/optimizer_steps"] = static_cast<double>(steps);
  it.metrics["ppo/early_stopped"] = stopped ? 1.0 : 0.0;
  kl_.update(mean_kl, B);
  return it;
}

}  // namespace concord::rlhf
