// PPO and GRPO: their math against TRL 1.12's (fixtures from scripts/fixtures/make_rlhf_fixtures.py),
// the adaptive KL controller against TRL 0.11's formula, the tensor sampler against lm::generate
// and the scorer, the aggregators, and a short run that raises the reward it is given.
#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "concord/io/safetensors.h"
#include "concord/lm/generate.h"
#include "concord/lm/score.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/grpo.h"
#include "concord/rlhf/ppo.h"
#include "concord/rlhf/synthetic.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;

namespace {

double scalar(std::map<std::string, at::Tensor>& f, const std::string& name) {
  return f.at(name).item<double>();
}

}  // namespace

TEST(PpoMath, RewardsAdvantagesAndReturnsMatchTrl) {
  auto f = io::load_safetensors(fixture("rlhf") / "ppo_reference.safetensors");
  const at::Tensor mask = f["mask"].to(at::kFloat), vmask = f["value_mask"].to(at::kFloat);
  // TRL overwrites log-probs past the response (INVALID_LOGPROB on both sides): KL 0 there.
  const at::Tensor logp = f["logprobs"] * mask, ref = f["ref_logprobs"] * mask;
  EXPECT_LT(max_abs_diff(rlhf::kl_estimate(logp, ref, "k1") * mask, f["kl_k1"]), 1e-6);
  EXPECT_LT(max_abs_diff(rlhf::kl_estimate(logp, ref, "k3") * mask, f["kl_k3"]), 1e-6);
  // TRL 1.12 puts the score one past the last response token (its first pad), or on the last
  // position when the response fills the row; form the rewards its way, then GAE must agree.
  const double kl_coef = scalar(f, "kl_coef");
  at::Tensor rewards = -kl_coef * f["kl_k1"];
  const at::Tensor len = f["sequence_lengths"];
  const int64_t T = rewards.size(1);
  for (int64_t b = 0; b < rewards.size(0); ++b) {
    int64_t at_index = len[b].item<int64_t>() + 1;
    if (at_index >= T) at_index = len[b].item<int64_t>();
    rewards[b][at_index] += f["scores"][b];
  }
  EXPECT_LT(max_abs_diff(rewards, f["rewards"]), 1e-6);
  const at::Tensor values = f["values_masked"];
  for (const auto& [gamma, suffix] : std::vector<std::pair<double, std::string>>{
           {scalar(f, "gamma"), ""}, {scalar(f, "gamma_g09"), "_g09"}}) {
    SCOPED_TRACE(suffix);
    const auto adv = rlhf::generalized_advantages(f["rewards"], values, mask, gamma, scalar(f, "lam"));
    EXPECT_LT(max_abs_diff(adv.returns, f["returns" + suffix]), 1e-5);
    EXPECT_LT(max_abs_diff(adv.advantages, f["advantages" + suffix]), 1e-5);
  }
  // Reward whitening keeps the mean (shift_mean false) over the value mask.
  EXPECT_LT(
      max_abs_diff(rlhf::masked_whiten(f["rewards"], vmask, false) * vmask, f["rewards_whitened"]),
      1e-5);
  EXPECT_NEAR((f["kl_k1"].sum(1).mean()).item<double>(), scalar(f, "objective_kl"), 1e-6);
}

TEST(PpoMath, ClippedLossesMatchTrl) {
  auto f = io::load_safetensors(fixture("rlhf") / "ppo_reference.safetensors");
  const at::Tensor mask = f["mask"].to(at::kFloat), vmask = f["value_mask"].to(at::kFloat);
  const at::Tensor logp_new = f["logprobs_new"] * mask, logp_old = f["logprobs"] * mask;
  const at::Tensor v_new = f["values_new"] * vmask;
  const double clip = scalar(f, "cliprange"), vclip = scalar(f, "cliprange_value");
  // Policy terms over the response mask, value terms over TRL's one-longer value mask.
  const auto pg = rlhf::ppo_loss_terms(logp_new, logp_old, v_new, f["values_masked"],
                                       f["advantages"], f["returns"], mask, clip, vclip);
  const auto vf = rlhf::ppo_loss_terms(logp_new, logp_old, v_new, f["values_masked"],
                                       f["advantages"], f["returns"], vmask, clip, vclip);
  EXPECT_NEAR((pg.pg_loss / pg.tokens).item<double>(), scalar(f, "pg_loss"), 1e-6);
  EXPECT_NEAR((vf.vf_loss / vf.tokens).item<double>(), scalar(f, "vf_loss"), 1e-6);
  EXPECT_NEAR((pg.pg_clipfrac / pg.tokens).item<double>(), scalar(f, "pg_clipfrac"), 1e-6);
  EXPECT_NEAR((vf.vf_clipfrac / vf.tokens).item<double>(), scalar(f, "vf_clipfrac"), 1e-6);
  EXPECT_NEAR(((pg.pg_loss / pg.tokens) + scalar(f, "vf_coef") * (vf.vf_loss / vf.tokens)).item<double>(),
              scalar(f, "loss"), 1e-6);
  // TRL averages approx KL over every position (padding holds 0): the same sum over B x T.
  EXPECT_NEAR((pg.approxkl / static_cast<double>(mask.numel())).item<double>(), scalar(f, "approxkl"), 1e-6);
}

TEST(PpoMath, AdaptiveKlControllerIsZieglersProportionalRule) {
  rlhf::KlController kl(0.2, true, 6.0, 10000);
  kl.update(9.0, 256);  // error clip(9/6 - 1) = 0.2
  EXPECT_NEAR(kl.value(), 0.2 * (1 + 0.2 * 256 / 10000.0), 1e-15);
  kl.update(5.4, 128);  // error -0.1
  EXPECT_NEAR(kl.value(), 0.2 * (1 + 0.2 * 256 / 10000.0) * (1 - 0.1 * 128 / 10000.0), 1e-15);
  rlhf::KlController fixed(0.05, false, 6.0, 10000);
  fixed.update(100.0, 1000);
  EXPECT_EQ(fixed.value(), 0.05);
}

TEST(GrpoMath, AdvantagesAndPerTokenLossMatchTrl) {
  auto f = io::load_safetensors(fixture("rlhf") / "grpo_reference.safetensors");
  const int64_t G = f["num_generations"].item<int64_t>();
  const at::Tensor adv = rlhf::group_relative_advantages(f["rewards"], G, true);
  EXPECT_LT(max_abs_diff(adv, f["advantages"]), 1e-6);
  const at::Tensor mask = f["mask"].to(at::kFloat);
  const at::Tensor loss = rlhf::grpo_per_token_loss(f["per_token_logps"], f["old_per_token_logps"],
                                                    f["ref_per_token_logps"], f["advantages"],
                                                    scalar(f, "epsilon"), scalar(f, "beta"));
  EXPECT_LT(max_abs_diff(loss * mask, f["per_token_loss"] * mask), 1e-6);
  const double grpo = ((loss * mask).sum(1) / mask.sum(1)).mean().item<double>();
  EXPECT_NEAR(grpo, scalar(f, "loss_grpo"), 1e-6);
  EXPECT_NEAR(((loss * mask).sum() / mask.sum()).item<double>(), scalar(f, "loss_bnpo"), 1e-6);
}

TEST(Aggregators, CombineGroupRewardsByName) {
  const at::Tensor r = at::tensor({1.0f, -2.0f, 3.0f, 0.5f}).view({2, 2});
  auto min = rlhf::make_aggregator({"min"});
  EXPECT_LT(max_abs_diff(min->combine(r), at::tensor({-2.0f, 0.5f})), 1e-7);
  auto argmin = rlhf::make_aggregator({"argmin_group"});
  // Group means: 2.0 and -0.75: the second group is worst off, so its reward is used.
  EXPECT_LT(max_abs_diff(argmin->combine(r), at::tensor({-2.0f, 0.5f})), 1e-7);
  EXPECT_EQ(argmin->last_choice(), 1);
  auto mean = rlhf::make_aggregator({"mean"});
  EXPECT_LT(max_abs_diff(mean->combine(r), at::tensor({-0.5f, 1.75f})), 1e-7);
  rlhf::AggregatorOptions single{"single", 1.0, 0};
  EXPECT_LT(max_abs_diff(rlhf::make_aggregator(single)->combine(r), at::tensor({1.0f, 3.0f})),
            1e-7);
  // softmin lies between min and mean, and tends to each at the ends of its temperature.
  for (double tau : {1e-3, 1.0, 1e3}) {
    rlhf::AggregatorOptions o{"softmin", tau, 0};
    const at::Tensor s = rlhf::make_aggregator(o)->combine(r);
    EXPECT_TRUE((s >= min->combine(r) - 1e-6).all().item<bool>());
    EXPECT_TRUE((s <= mean->combine(r) + 1e-6).all().item<bool>());
  }
  EXPECT_LT(max_abs_diff(rlhf::make_aggregator({"softmin", 1e-3, 0})->combine(r), min->combine(r)),
            1e-4);
  try {
    rlhf::make_aggregator({"median"});
    FAIL() << "an unknown aggregator was made";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("argmin_group"), std::string::npos) << e.what();
  }
}

TEST(GenerateTensors, GreedyMatchesGenerateAndLogprobsMatchTheScorer) {
  torch::manual_seed(4);
  rlhf::TwoGroupWorldOptions w;
  lm::CausalLM model(rlhf::world_model_config(w, 16));
  model->eval();
  const auto prompts = rlhf::world_prompts(w, 3, 1);
  std::vector<std::vector<int64_t>> uneven = prompts;
  uneven[1].resize(3);  // a shorter prompt: left padding
  auto [ids, mask] = rlhf::pad_prompts_left(uneven, 0);
  lm::GenerationOptions g;
  g.max_new_tokens = 6;
  g.stop_token_ids = {rlhf::kWorldEos};
  g.pad_token_id = 0;
  const lm::SampledBatch s = lm::generate_tensors(model, ids, mask, g);
  const auto want = lm::generate(model, uneven, g);
  std::vector<std::vector<int64_t>> continuations;
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = s.response_mask[b].sum().item<int64_t>();
    std::vector<int64_t> got;
    for (int64_t t = 0; t < n; ++t) got.push_back(s.response[b][t].item<int64_t>());
    EXPECT_EQ(got, want[static_cast<size_t>(b)].tokens) << b;
    continuations.push_back(got);
  }
  const auto scores = lm::score_continuations(model, uneven, continuations);
  for (int64_t b = 0; b < 3; ++b) {
    for (size_t t = 0; t < continuations[static_cast<size_t>(b)].size(); ++t) {
      EXPECT_NEAR(s.logprobs[b][static_cast<int64_t>(t)].item<double>(),
                  scores[static_cast<size_t>(b)].token_logprobs[t], 1e-4);
    }
  }
  // Sampling with a seed is reproducible, and stops are kept with padding after them.
  g.do_sample = true;
  g.seed = 9;
  g.max_new_tokens = 12;
  const lm::SampledBatch a = lm::generate_tensors(model, ids, mask, g);
  const lm::SampledBatch b = lm::generate_tensors(model, ids, mask, g);
  EXPECT_TRUE(a.response.equal(b.response));
  for (int64_t row = 0; row < 3; ++row) {
    const int64_t n = a.response_mask[row].sum().item<int64_t>();
    for (int64_t t = n; t < a.response.size(1); ++t) {
      EXPECT_EQ(a.response[row][t].item<int64_t>(), 0);
      EXPECT_EQ(a.logprobs[row][t].item<float>(), 0.0f);
    }
  }
}

namespace {

// A reward model that has learnt the majority's taste (planted words).
rlhf::RewardSet majority_reward_model(const rlhf::TwoGroupWorldOptions& w, lm::CausalLM reference) {
  auto data = rlhf::sample_preferences(reference, w, 3);
  torch::manual_seed(5);
  rlhf::RewardModel model(rlhf::world_model_config(w, 16), 1);
  auto set = rlhf::RewardSet::shared(model);
  rlhf::BradleyTerryObjective objective(set);
  std::vector<int64_t> majority;
  for (const auto& p : data.pairs()) majority.push_back(p.group_index == 0 ? 0 : -1);
  rlhf::ClusterBalancedPairs source(data, majority, 16, 0);
  train::TrainerOptions t;
  t.max_steps = 80;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0;
  t.progress = false;
  train::Trainer trainer(set.named_modules(), t);
  trainer.fit(objective, source);
  set.train(false);
  return set;
}

}  // namespace

TEST(PpoTrainer, RaisesTheScoreOfItsRewardModel) {
  rlhf::TwoGroupWorldOptions w;
  w.majority_users = 8;
  w.minority_users = 1;
  torch::manual_seed(6);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  rlhf::train_reference_policy(reference, w, 60, 1e-2, 0);
  auto rewards = majority_reward_model(w, reference);
  lm::CausalLM policy = std::dynamic_pointer_cast<lm::CausalLMImpl>(reference->clone());
  rlhf::PolicyWithValue actor(policy);
  rlhf::PpoOptions o;
  o.batch_size = 16;
  o.mini_batch_size = 8;
  o.ppo_epochs = 2;
  o.init_kl_coef = 0.02;
  rlhf::RolloutOptions ro;
  ro.generation = rlhf::world_generation(w, 0);
  train::TrainerOptions t;
  t.max_steps = 1000;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0;
  t.lr_schedule = "constant";
  t.progress = false;
  rlhf::PpoTrainer ppo(actor, reference, rewards, rlhf::make_aggregator({"single"}), o, ro, t);
  const auto prompts = rlhf::world_prompts(w, 16, 1);
  std::vector<double> scores;
  for (int i = 0; i < 12; ++i) {
    const auto it = ppo.step(prompts);
    scores.push_back(it.metrics.at("objective/scores"));
    for (const char* name : {"objective/kl", "objective/rlhf_reward", "policy/clipfrac_avg",
                             "loss/value_avg", "val/ratio", "policy/approxkl_avg"}) {
      ASSERT_TRUE(it.metrics.count(name)) << name;
      EXPECT_TRUE(std::isfinite(it.metrics.at(name))) << name;
    }
  }
  const double first = (scores[0] + scores[1] + scores[2]) / 3;
  const double last = (scores[9] + scores[10] + scores[11]) / 3;
  EXPECT_GT(last, first + 0.3) << "scores did not rise: " << first << " -> " << last;
  // The reference stays frozen.
  EXPECT_TRUE(ppo.trainer().step() == 12 * 2 * 2);
}

TEST(GrpoTrainer, RaisesTheScoreWithoutAValueHead) {
  rlhf::TwoGroupWorldOptions w;
  w.majority_users = 8;
  w.minority_users = 1;
  torch::manual_seed(6);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  rlhf::train_reference_policy(reference, w, 60, 1e-2, 0);
  auto rewards = majority_reward_model(w, reference);
  lm::CausalLM policy = std::dynamic_pointer_cast<lm::CausalLMImpl>(reference->clone());
  rlhf::GrpoOptions o;
  o.batch_size = 4;
  o.num_generations = 4;
  o.mini_batch_size = 8;
  rlhf::RolloutOptions ro;
  ro.generation = rlhf::world_generation(w, 0);
  train::TrainerOptions t;
  t.max_steps = 1000;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0;
  t.lr_schedule = "constant";
  t.progress = false;
  rlhf::GrpoTrainer grpo(policy, reference, rewards, rlhf::make_aggregator({"single"}), o, ro, t);
  const auto prompts = rlhf::world_prompts(w, 4, 2);
  std::vector<double> scores;
  for (int i = 0; i < 15; ++i) scores.push_back(grpo.step(prompts).metrics.at("reward"));
  const double first = (scores[0] + scores[1] + scores[2]) / 3;
  const double last = (scores[12] + scores[13] + scores[14]) / 3;
  EXPECT_GT(last, first + 0.3) << "scores did not rise: " << first << " -> " << last;
}

namespace {

struct GrpoRun {
  std::map<std::string, double> metrics;
  std::vector<at::Tensor> deltas;  // each parameter's change, on the CPU
};

// One GRPO iteration of a copy of `reference` on `device` (fp32), with each prompt's columns
// shared among its G samples or not; the sampling generator seeded the same either way.
GrpoRun one_grpo_iteration(lm::CausalLM reference, rlhf::RewardSet rewards,
                           const rlhf::TwoGroupWorldOptions& w, bool share, c10::Device device) {
  lm::CausalLM policy = std::dynamic_pointer_cast<lm::CausalLMImpl>(reference->clone());
  policy->to(device);
  reference->to(device);
  rewards.to(device);
  std::vector<at::Tensor> before;
  for (const auto& p : policy->parameters()) before.push_back(p.detach().cpu().clone());
  rlhf::GrpoOptions o;
  o.batch_size = 4;
  o.num_generations = 4;
  o.mini_batch_size = 8;
  rlhf::RolloutOptions ro;
  ro.generation = rlhf::world_generation(w, 0);
  ro.generation.share_prompts = share;
  train::TrainerOptions t;
  t.max_steps = 10;
  t.optimizer.lr = 1e-3;
  t.optimizer.weight_decay = 0;
  t.lr_schedule = "constant";
  t.progress = false;
  rlhf::GrpoTrainer grpo(policy, reference, rewards, rlhf::make_aggregator({"single"}), o, ro, t);
  torch::manual_seed(11);  // the CUDA sampler draws from the global generator
  GrpoRun run;
  run.metrics = grpo.step(rlhf::world_prompts(w, 4, 2)).metrics;
  const auto after = policy->parameters();
  for (size_t i = 0; i < after.size(); ++i)
    run.deltas.push_back(after[i].detach().cpu() - before[i]);
  return run;
}

// The same rollouts, metrics and update up to floating-point summation order.
void expect_same_iteration(const GrpoRun& shared, const GrpoRun& plain) {
  const auto& a = shared.metrics;
  const auto& b = plain.metrics;
  EXPECT_EQ(a.at("completions/mean_length"), b.at("completions/mean_length"));
  EXPECT_NEAR(a.at("reward"), b.at("reward"), 1e-5);
  EXPECT_NEAR(a.at("reward_std"), b.at("reward_std"), 1e-5);
  EXPECT_NEAR(a.at("loss"), b.at("loss"), 1e-5 + 1e-4 * std::abs(b.at("loss")));
  EXPECT_NEAR(a.at("kl"), b.at("kl"), 1e-6);
  // Adam's first steps are nearly sign(g) lr, so a gradient within rounding of zero may move
  // either way; a wrong position or prompt would change most of the update.
  double diff = 0, norm = 0;
  for (size_t i = 0; i < shared.deltas.size(); ++i) {
    diff += (shared.deltas[i] - plain.deltas[i]).pow(2).sum().item<double>();
    norm += plain.deltas[i].pow(2).sum().item<double>();
  }
  ASSERT_GT(norm, 0);
  EXPECT_LT(std::sqrt(diff / norm), 1e-2);
}

rlhf::TwoGroupWorldOptions long_prompt_world() {
  rlhf::TwoGroupWorldOptions w;
  w.majority_users = 8;
  w.minority_users = 1;
  w.prompt_length = 12;  // prompts as long as the responses: sharing pays in every pass
  return w;
}

}  // namespace

// Sharing each prompt's columns among its G samples (generation.share_prompts, on by default:
// in sampling, in the reference's and the reward model's passes and in the updates) changes
// what an iteration costs, not what it computes.
TEST(GrpoTrainer, SharedPromptsGiveTheSameIteration) {
  const rlhf::TwoGroupWorldOptions w = long_prompt_world();
  torch::manual_seed(6);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  rlhf::train_reference_policy(reference, w, 20, 1e-2, 0);
  auto rewards = majority_reward_model(w, reference);
  expect_same_iteration(one_grpo_iteration(reference, rewards, w, true, at::kCPU),
                        one_grpo_iteration(reference, rewards, w, false, at::kCPU));
}

TEST(GrpoTrainer, SharedPromptsGiveTheSameIterationOnCuda_CUDA) {
  CONCORD_REQUIRE_CUDA();
  const rlhf::TwoGroupWorldOptions w = long_prompt_world();
  torch::manual_seed(6);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  rlhf::RewardModel rm(rlhf::world_model_config(w, 16), 1);
  auto rewards = rlhf::RewardSet::shared(rm);
  expect_same_iteration(one_grpo_iteration(reference, rewards, w, true, at::kCUDA),
                        one_grpo_iteration(reference, rewards, w, false, at::kCUDA));
}

TEST(GenerateTensors, GreedyOnCudaMatchesCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(4);
  rlhf::TwoGroupWorldOptions w;
  lm::CausalLM model(rlhf::world_model_config(w, 16));
  model->eval();
  auto [ids, mask] = rlhf::pad_prompts_left(rlhf::world_prompts(w, 3, 1), 0);
  lm::GenerationOptions g;
  g.max_new_tokens = 6;
  g.pad_token_id = 0;
  const lm::SampledBatch cpu = lm::generate_tensors(model, ids, mask, g);
  model->to(at::kCUDA);
  const lm::SampledBatch gpu = lm::generate_tensors(model, ids, mask, g);
  EXPECT_TRUE(gpu.response.device().is_cuda());
  EXPECT_TRUE(gpu.response.cpu().equal(cpu.response));
  EXPECT_LT(max_abs_diff(gpu.logprobs.cpu(), cpu.logprobs), 1e-4);
}

TEST(PpoTrainer, AnIterationRunsOnCuda_CUDA) {
  CONCORD_REQUIRE_CUDA();
  rlhf::TwoGroupWorldOptions w;
  torch::manual_seed(6);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  reference->to(at::kCUDA);
  rlhf::RewardModel rm(rlhf::world_model_config(w, 16), 2);
  rm->to(at::kCUDA);
  lm::CausalLM policy = std::dynamic_pointer_cast<lm::CausalLMImpl>(reference->clone());
  rlhf::PolicyWithValue actor(policy);
  actor->to(at::kCUDA);
  rlhf::PpoOptions o;
  o.batch_size = 8;
  o.mini_batch_size = 4;
  o.normalize_rewards = true;
  rlhf::RolloutOptions ro;
  ro.generation = rlhf::world_generation(w, 0);
  train::TrainerOptions t;
  t.progress = false;
  t.precision = "bf16";
  rlhf::PpoTrainer ppo(actor, reference, rlhf::RewardSet::shared(rm), rlhf::make_aggregator({"min"}),
                       o, ro, t);
  const auto it = ppo.step(rlhf::world_prompts(w, 8, 1));
  for (const auto& [name, v] : it.metrics) EXPECT_TRUE(std::isfinite(v)) << name;
  EXPECT_EQ(ppo.trainer().step(), 8);
}
