// Tests of DPO and group-robust DPO (concord/rlhf/dpo.h): the loss against TRL's DPOTrainer
// (fixture) and against hand-computed values; the objective on a tiny causal LM (log 2 per pair
// when the policy is the reference, the response log-probs equal to the library scorer's, the
// gradient against central finite differences in double precision); training that learns
// planted preferences; and the group weights of GR-DPO (the exact exponentiated-gradient step,
// only present groups moving, evaluation never moving them, alpha shifting to the harder group).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/data/preference.h"
#include "concord/data/records.h"
#include "concord/io/safetensors.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/lm/score.h"
#include "concord/rlhf/dpo.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace concord;
using rlhf::DpoObjective;
using rlhf::DpoOptions;

namespace {

const double kLog2 = std::log(2.0);

lm::CausalLM tiny_model(uint64_t seed, const std::string& family = "llama") {
  seed_everything(seed);
  return lm::CausalLM(lm::model_config_from_json(
      parse_json(R"({"family": ")" + family + R"(", "vocab_size": 257, "hidden_size": 32,
        "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 128, "eos_token_id": 256, "pad_token_id": 256})",
                 "<test>"),
      "<test>"));
}

data::PreferenceRecord record(const std::string& prompt, const std::string& chosen,
                              const std::string& rejected, const std::string& user = "u") {
  data::PreferenceRecord r;
  r.prompt = prompt;
  r.chosen = chosen;
  r.rejected = rejected;
  r.user = user;
  return r;
}

// Pairs of a ByteTokenizer with the plain template; users indexed in order of appearance.
data::PreferenceDataset dataset(std::vector<data::PreferenceRecord> records) {
  data::UserIndex users;
  for (auto& r : records) r.user_index = users.add(r.user);
  static const text::ByteTokenizer tokenizer;
  return data::PreferenceDataset::from_records(records, tokenizer, {}, users);
}

std::vector<int64_t> all_items(const data::PreferenceDataset& d) {
  std::vector<int64_t> items;
  for (int64_t i = 0; i < d.size(); ++i) items.push_back(i);
  return items;
}

// Chosen " yes <w>" over rejected " no <w>", prompts of different lengths.
data::PreferenceDataset planted_pairs() {
  std::vector<data::PreferenceRecord> records;
  for (const std::string w : {"sky", "tea", "river", "stone", "lamp", "owl", "fig", "snowfall"}) {
    records.push_back(record("Is it " + w + "?", " yes " + w, " no " + w));
  }
  return dataset(records);
}

train::TrainerOptions quiet(int64_t steps, double lr) {
  train::TrainerOptions o;
  o.max_steps = steps;
  o.optimizer.lr = lr;
  o.optimizer.weight_decay = 0;
  o.lr_schedule = "constant";
  o.progress = false;
  return o;
}

double max_abs(const at::Tensor& t) { return t.abs().max().item<double>(); }

}  // namespace

// ---- the loss --------------------------------------------------------------------------------

TEST(DpoLoss, MatchesHandComputedValues) {
  // z = (pc - rc) - (pr - rr): 2, -3, 0.
  const auto pc = torch::tensor({-10.0, -20.0, -5.0}, torch::kDouble);
  const auto pr = torch::tensor({-12.0, -21.0, -6.0}, torch::kDouble);
  const auto rc = torch::tensor({-11.0, -18.0, -4.0}, torch::kDouble);
  const auto rr = torch::tensor({-11.0, -22.0, -5.0}, torch::kDouble);
  const std::vector<double> z = {2.0, -3.0, 0.0};
  const auto softplus = [](double x) { return std::log1p(std::exp(x)); };  // -log sigmoid(-x)

  DpoOptions o;  // beta 0.1
  const rlhf::DpoLoss l = rlhf::dpo_loss(pc, pr, rc, rr, o);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NEAR(l.losses[i].item<double>(), softplus(-0.1 * z[i]), 1e-14) << i;
  }
  EXPECT_NEAR(l.losses[2].item<double>(), kLog2, 1e-14);
  EXPECT_NEAR(l.chosen_rewards[0].item<double>(), 0.1 * (-10 + 11), 1e-15);
  EXPECT_NEAR(l.rejected_rewards[1].item<double>(), 0.1 * (-21 + 22), 1e-15);

  // cDPO: -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z).
  o.beta = 0.5;
  o.label_smoothing = 0.2;
  const rlhf::DpoLoss s = rlhf::dpo_loss(pc, pr, rc, rr, o);
  for (int i = 0; i < 3; ++i) {
    const double expected = 0.8 * softplus(-0.5 * z[i]) + 0.2 * softplus(0.5 * z[i]);
    EXPECT_NEAR(s.losses[i].item<double>(), expected, 1e-14) << i;
  }
}

TEST(DpoLoss, StaysFiniteFarFromZeroAndRewardsCarryNoGradient) {
  // beta z = -2000: log(sigmoid(.)) would be log(0) = -inf; log_sigmoid gives 2000.
  auto pc = torch::tensor({-5000.0f}, torch::requires_grad());
  const auto zero = torch::zeros({1});
  DpoOptions o;
  o.beta = 0.4;
  const rlhf::DpoLoss l = rlhf::dpo_loss(pc, zero, zero, zero, o);
  EXPECT_FLOAT_EQ(l.losses[0].item<float>(), 2000.0f);
  EXPECT_FALSE(l.chosen_rewards.requires_grad());
  EXPECT_FALSE(l.rejected_rewards.requires_grad());
  l.losses.sum().backward();
  EXPECT_FLOAT_EQ(pc.grad()[0].item<float>(), -0.4f);  // d/dpc = -beta sigmoid(-beta z) = -beta
}

TEST(DpoLoss, MatchesTrlDpoTrainer) {
  const fs::path path = concord::testing::fixture("rlhf/dpo_reference.safetensors");
  if (!fs::exists(path)) GTEST_SKIP() << "missing fixture " << path;
  auto t = io::load_safetensors(path);
  DpoOptions o;
  o.beta = t.at("beta").item<double>();
  EXPECT_NEAR(o.beta, 0.1, 1e-7);
  const rlhf::DpoLoss l =
      rlhf::dpo_loss(t.at("policy_chosen_logps"), t.at("policy_rejected_logps"),
                     t.at("ref_chosen_logps"), t.at("ref_rejected_logps"), o);
  ASSERT_EQ(l.losses.sizes(), t.at("losses").sizes());
  EXPECT_LT(max_abs(l.losses - t.at("losses")), 1e-6);
  EXPECT_LT(max_abs(l.chosen_rewards - t.at("chosen_rewards")), 1e-6);
  EXPECT_LT(max_abs(l.rejected_rewards - t.at("rejected_rewards")), 1e-6);
  EXPECT_NEAR(l.losses.mean().item<double>(), t.at("loss").item<double>(), 1e-6);
  const auto accuracy = l.chosen_rewards.gt(l.rejected_rewards).to(torch::kFloat).mean();
  EXPECT_NEAR(accuracy.item<double>(), t.at("reward_accuracy").item<double>(), 1e-7);
  EXPECT_NEAR((l.chosen_rewards - l.rejected_rewards).mean().item<double>(),
              t.at("reward_margin").item<double>(), 1e-6);
}

TEST(DpoLoss, OptionsAreDeclaredOnceAndChecked) {
  const auto& schema = rlhf::dpo_options_schema();
  const DpoOptions o =
      schema.from_json(parse_json(R"({"beta": 0.3, "group_robust": true})", "t"), "t");
  EXPECT_DOUBLE_EQ(o.beta, 0.3);
  EXPECT_TRUE(o.group_robust);
  EXPECT_DOUBLE_EQ(o.group_step_size, 0.01);
  EXPECT_DOUBLE_EQ(o.label_smoothing, 0.0);
  EXPECT_EQ(schema.to_json(DpoOptions{}),
            parse_json(R"({"beta": 0.1, "label_smoothing": 0.0, "group_robust": false,
                           "group_step_size": 0.01, "share_prefixes": true})", "t"));
  EXPECT_THROW(schema.from_json(parse_json(R"({"beta": 0})", "t"), "t"), ConfigError);
  EXPECT_THROW(schema.from_json(parse_json(R"({"label_smoothing": 0.5})", "t"), "t"), ConfigError);
  EXPECT_THROW(schema.from_json(parse_json(R"({"betta": 0.1})", "t"), "t"), ConfigError);
  DpoOptions bad;
  bad.group_step_size = -1;
  const auto x = torch::zeros({2});
  EXPECT_THROW(rlhf::dpo_loss(x, x, x, x, bad), ConfigError);
  EXPECT_THROW(rlhf::dpo_loss(x, torch::zeros({3}), x, x), Error);
}

// ---- the objective on a causal LM ---------------------------------------------------------------

TEST(DpoObjective, ResponseLogprobsAreTheScorersContinuationLogprobs) {
  lm::CausalLM model = tiny_model(3);
  model->eval();
  const auto d = planted_pairs();
  const data::PreferenceBatch batch = d.get_batch(all_items(d));
  torch::NoGradGuard no_grad;
  const rlhf::ResponseLogprobs lp = rlhf::response_logprobs(model, batch);
  std::vector<std::vector<int64_t>> prompts, responses;
  for (const auto& pair : d.pairs()) {
    for (const auto* side : {&pair.chosen, &pair.rejected}) {
      prompts.emplace_back(side->begin(), side->begin() + pair.prompt_length);
      responses.emplace_back(side->begin() + pair.prompt_length, side->end());
    }
  }
  const auto scores = lm::score_continuations(model, prompts, responses);
  for (int64_t b = 0; b < d.size(); ++b) {
    EXPECT_NEAR(lp.chosen[b].item<double>(), scores[2 * b].sum, 1e-4) << b;
    EXPECT_NEAR(lp.rejected[b].item<double>(), scores[2 * b + 1].sum, 1e-4) << b;
  }
}

TEST(DpoObjective, PolicyEqualToReferenceGivesLogTwoPerPair) {
  lm::CausalLM policy = tiny_model(5);
  lm::CausalLM reference = std::dynamic_pointer_cast<lm::CausalLMImpl>(policy->clone());
  DpoObjective objective(policy, reference);
  EXPECT_FALSE(reference->is_training());
  const auto d = planted_pairs();
  const data::PreferenceBatch batch = d.get_batch(all_items(d));
  EXPECT_EQ(objective.count(batch), 8);
  EXPECT_EQ(objective.unit(), "pairs");
  const train::LossSum out = objective.loss(batch);
  EXPECT_TRUE(out.sum.requires_grad());
  EXPECT_FLOAT_EQ(out.sum.item<float>(), static_cast<float>(8 * kLog2));
  for (const char* name : {"rewards/chosen", "rewards/rejected", "rewards/margins",
                           "rewards/accuracies"}) {
    ASSERT_EQ(out.metrics.count(name), 1u) << name;
    EXPECT_EQ(out.metrics.at(name).sum, 0.0) << name;
    EXPECT_EQ(out.metrics.at(name).weight, 8.0) << name;
  }
  EXPECT_LT(out.metrics.at("logps/chosen").value(), 0.0);
  EXPECT_LT(out.metrics.at("logps/rejected").value(), 0.0);
  // The reference must be a separate module.
  EXPECT_THROW(DpoObjective same(policy, policy), Error);
}

TEST(DpoObjective, GradientMatchesCentralFiniteDifferences) {
  // GPT-2 is double end to end; Llama's RMSNorm takes its statistics in fp32 (as transformers
  // does), which would bury a finite difference in float rounding.
  lm::CausalLM policy = tiny_model(11, "gpt2");
  lm::CausalLM reference = tiny_model(12, "gpt2");  // other weights, so z != 0
  policy->to(torch::kDouble);
  reference->to(torch::kDouble);
  DpoOptions o;
  o.beta = 0.5;
  o.label_smoothing = 0.1;  // both log-sigmoid terms
  DpoObjective objective(policy, reference, o);
  const auto d = planted_pairs();
  const data::PreferenceBatch batch = d.get_batch({0, 3, 5, 7});
  const auto loss = [&] { return objective.loss(batch).sum; };

  const at::Tensor l = loss();
  ASSERT_EQ(l.scalar_type(), torch::kDouble);
  l.backward();
  const auto params = policy->named_parameters();
  const std::vector<std::string> names = {params.keys().front(),
                                          params.keys()[params.size() / 2],
                                          params.keys().back()};
  for (const auto& name : names) {
    at::Tensor p = params[name];
    ASSERT_TRUE(p.grad().defined()) << name;
    const int64_t k = p.grad().abs().reshape({-1}).argmax().item<int64_t>();
    const double analytic = p.grad().reshape({-1})[k].item<double>();
    ASSERT_GT(std::abs(analytic), 1e-6) << name;
    const double h = 1e-5;
    double up, down;
    {
      torch::NoGradGuard no_grad;
      at::Tensor e = p.view({-1}).narrow(0, k, 1);
      e.add_(h);
      up = loss().item<double>();
      e.sub_(2 * h);
      down = loss().item<double>();
      e.add_(h);
    }
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(analytic, numeric, 1e-6 * std::abs(analytic)) << name << "[" << k << "]";
  }
}

// ---- training ---------------------------------------------------------------------------------

TEST(DpoTrainer, RaisesAccuracyAndMarginOnPlantedPairs) {
  lm::CausalLM policy = tiny_model(21);
  lm::CausalLM reference = std::dynamic_pointer_cast<lm::CausalLMImpl>(policy->clone());
  const at::Tensor reference_weight = reference->embed->weight.clone();
  const auto d = planted_pairs();
  DpoObjective objective(policy, reference);
  train::Trainer trainer({{"policy", policy.ptr()}}, quiet(25, 1e-2));
  train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> train_data(
      d, {/*batch_size=*/4, /*shuffle=*/true, /*seed=*/1});
  train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> eval_data(
      d, {/*batch_size=*/8, /*shuffle=*/false});

  const train::EvalResult before = trainer.evaluate(objective, eval_data);
  EXPECT_NEAR(before.loss, kLog2, 1e-6);
  EXPECT_EQ(before.metrics.at("rewards/accuracies").value(), 0.0);  // ties are not correct
  EXPECT_EQ(before.metrics.at("rewards/margins").value(), 0.0);

  const train::TrainResult result = trainer.fit(objective, train_data);
  EXPECT_EQ(result.steps, 25);
  const train::EvalResult after = trainer.evaluate(objective, eval_data);
  EXPECT_EQ(after.metrics.at("rewards/accuracies").value(), 1.0);
  EXPECT_GT(after.metrics.at("rewards/margins").value(), 1.0);
  EXPECT_LT(after.loss, 0.1);
  // The rewards are the policy's log-ratios to the frozen reference, which never moved.
  EXPECT_TRUE(torch::equal(reference->embed->weight, reference_weight));
  EXPECT_FALSE(reference->is_training());
}

// ---- group-robust DPO -------------------------------------------------------------------------

namespace {

// Group 0 (users a, b) agree: " yes" over " no". Group 1 (users c, d) contradict each other on
// the same prompts, so their mean loss can never fall below log 2: the harder group.
data::PreferenceDataset two_groups() {
  std::vector<data::PreferenceRecord> records;
  for (const std::string w : {"sky", "tea", "owl", "fig"}) {
    const std::string user = w == "sky" || w == "owl" ? "a" : "b";
    records.push_back(record("Is it " + w + "?", " yes", " no", user));
  }
  for (const std::string w : {"left", "right"}) {
    records.push_back(record("Go " + w + "?", " up", " down", "c"));
    records.push_back(record("Go " + w + "?", " down", " up", "d"));
  }
  return dataset(records);
}

at::Tensor two_group_table() { return torch::tensor({0, 0, 1, 1}, torch::kLong); }  // a b c d

DpoOptions robust(double step_size) {
  DpoOptions o;
  o.group_robust = true;
  o.group_step_size = step_size;
  return o;
}

}  // namespace

TEST(DpoGroupRobust, LossIsTheAlphaWeightedGroupMeanAndTheUpdateIsExact) {
  lm::CausalLM policy = tiny_model(31);
  lm::CausalLM reference = tiny_model(32);  // losses differ from log 2 from the start
  const auto d = two_groups();
  const data::PreferenceBatch batch = d.get_batch(all_items(d));
  const double eta = 0.7;
  DpoObjective objective(policy, reference, robust(eta));
  objective.set_user_groups(two_group_table());
  ASSERT_EQ(objective.num_groups(), 2);
  objective.set_group_weights(torch::tensor({3.0, 1.0}, torch::kDouble));  // normalised: .75, .25
  EXPECT_NEAR(objective.group_weights()[0].item<double>(), 0.75, 1e-15);

  const train::LossSum out = objective.loss(batch);
  const double l0 = out.metrics.at("robust/loss_0").value();
  const double l1 = out.metrics.at("robust/loss_1").value();
  EXPECT_EQ(out.metrics.at("robust/loss_0").weight, 4.0);
  EXPECT_EQ(out.metrics.at("robust/loss_1").weight, 4.0);
  EXPECT_NEAR(out.metrics.at("robust/weight_0").value(), 0.75, 1e-12);
  // sum / B = sum_g alpha_g mean_{b in g} l_b.
  EXPECT_NEAR(out.sum.item<double>() / 8, 0.75 * l0 + 0.25 * l1, 1e-5);

  // An evaluation pass (InferenceMode) in between is not counted: the update uses the training
  // pass's group means alone.
  {
    c10::InferenceMode inference;
    (void)objective.loss(d.get_batch({4, 5}));
  }
  objective.update_group_weights();
  const double r0 = std::log(0.75) + eta * l0, r1 = std::log(0.25) + eta * l1;
  const double z = std::log(std::exp(r0) + std::exp(r1));
  const at::Tensor alpha = objective.group_weights();
  EXPECT_NEAR(alpha[0].item<double>(), std::exp(r0 - z), 1e-12);
  EXPECT_NEAR(alpha[1].item<double>(), std::exp(r1 - z), 1e-12);
  EXPECT_NEAR(alpha.sum().item<double>(), 1.0, 1e-15);

  // Nothing seen since: no change.
  objective.update_group_weights();
  EXPECT_TRUE(torch::equal(objective.group_weights(), alpha));

  // A step that holds group 0 only moves log alpha_0 alone (then both renormalise).
  const train::LossSum only0 = objective.loss(d.get_batch({0, 2}));
  EXPECT_EQ(only0.metrics.count("robust/loss_1"), 0u);
  const double l = only0.metrics.at("robust/loss_0").value();
  EXPECT_NEAR(only0.sum.item<double>() / 2, alpha[0].item<double>() * l, 1e-5);
  objective.update_group_weights();
  const at::Tensor next = objective.group_weights();
  const double shift = std::log(next[0].item<double>() / next[1].item<double>()) -
                       std::log(alpha[0].item<double>() / alpha[1].item<double>());
  EXPECT_NEAR(shift, eta * l, 1e-12);
}

TEST(DpoGroupRobust, WeightsShiftTowardTheHarderGroup) {
  lm::CausalLM policy = tiny_model(41);
  lm::CausalLM reference = std::dynamic_pointer_cast<lm::CausalLMImpl>(policy->clone());
  const auto d = two_groups();
  DpoObjective objective(policy, reference, robust(0.5));
  objective.set_user_groups(two_group_table());
  EXPECT_NEAR(objective.group_weights()[1].item<double>(), 0.5, 1e-15);
  train::Trainer trainer({{"policy", policy.ptr()}}, quiet(20, 1e-2));
  trainer.set_step_hook([&](int64_t) { objective.update_group_weights(); });
  const data::PreferenceBatch batch = d.get_batch(all_items(d));
  for (int step = 0; step < 20; ++step) {
    const at::Tensor alpha = objective.group_weights();
    const train::StepStats s = trainer.train_step(objective, {batch});
    const double l0 = s.metrics.at("robust/loss_0").value();
    const double l1 = s.metrics.at("robust/loss_1").value();
    // The step used the weights from before it, and its loss is their weighted group mean.
    EXPECT_NEAR(s.metrics.at("robust/weight_1").value(), alpha[1].item<double>(), 1e-12);
    EXPECT_NEAR(s.loss, alpha[0].item<double>() * l0 + alpha[1].item<double>() * l1, 1e-5);
    EXPECT_NEAR(objective.group_weights().sum().item<double>(), 1.0, 1e-12);
  }
  const at::Tensor alpha = objective.group_weights();
  EXPECT_GT(alpha[1].item<double>(), 0.9);  // the contradictory group
  // The easy group was learnt regardless.
  const train::LossSum out = objective.loss(batch);
  EXPECT_LT(out.metrics.at("robust/loss_0").value(), 0.5 * kLog2);
  EXPECT_GE(out.metrics.at("robust/loss_1").value(), kLog2 - 1e-3);
}

TEST(DpoGroupRobust, NeedsAValidGroupTable) {
  lm::CausalLM policy = tiny_model(51);
  lm::CausalLM reference = std::dynamic_pointer_cast<lm::CausalLMImpl>(policy->clone());
  const auto d = two_groups();
  DpoObjective objective(policy, reference, robust(0.01));
  EXPECT_THROW(objective.loss(d.get_batch({0})), Error);  // no set_user_groups yet
  EXPECT_THROW(objective.set_user_groups(torch::tensor({0, -1}, torch::kLong)), Error);
  EXPECT_THROW(objective.set_user_groups(torch::tensor({0, 2}, torch::kLong), 2), Error);
  EXPECT_THROW(objective.set_user_groups(torch::tensor({0.0, 1.0})), Error);
  objective.set_user_groups(torch::tensor({0, 1}, torch::kLong));  // users c, d have no group
  EXPECT_THROW(objective.loss(d.get_batch({4})), Error);
  objective.set_user_groups(two_group_table(), 3);  // a third, empty group
  EXPECT_EQ(objective.num_groups(), 3);
  EXPECT_NEAR(objective.group_weights()[2].item<double>(), 1.0 / 3, 1e-15);
  EXPECT_THROW(objective.set_group_weights(torch::tensor({1.0, 0.0, 1.0})), Error);
}

TEST(DpoGroupRobust, CudaMatchesCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  lm::CausalLM policy = tiny_model(61);
  lm::CausalLM reference = tiny_model(62);
  const auto clone = [](const lm::CausalLM& m) {
    lm::CausalLM c(std::dynamic_pointer_cast<lm::CausalLMImpl>(m->clone()));
    c->to(torch::kCUDA);
    return c;
  };
  const auto d = two_groups();
  const data::PreferenceBatch batch = d.get_batch(all_items(d));  // CPU tensors for both
  DpoObjective cpu(policy, reference, robust(0.5));
  DpoObjective cuda(clone(policy), clone(reference), robust(0.5));
  cpu.set_user_groups(two_group_table());
  cuda.set_user_groups(two_group_table());
  const train::LossSum a = cpu.loss(batch);
  const train::LossSum b = cuda.loss(batch);
  EXPECT_TRUE(b.sum.is_cuda());
  EXPECT_NEAR(a.sum.item<double>(), b.sum.item<double>(), 1e-4);
  for (const auto& [name, m] : a.metrics) {
    ASSERT_EQ(b.metrics.count(name), 1u) << name;
    EXPECT_NEAR(m.value(), b.metrics.at(name).value(), 1e-4) << name;
  }
  cpu.update_group_weights();
  cuda.update_group_weights();
  EXPECT_LT(max_abs(cpu.group_weights() - cuda.group_weights()), 1e-5);
}
