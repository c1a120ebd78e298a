// Reward models against transformers' *ForSequenceClassification (fixtures written by
// scripts/fixtures/make_rlhf_fixtures.py), the Bradley-Terry loss against TRL's RewardTrainer,
// its gradient against finite differences, and the K-head / K-model layouts against each other.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/io/safetensors.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/synthetic.h"
#include "concord/train/trainer.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;
using concord::testing::TempDir;

namespace {

std::map<std::string, at::Tensor> reference(const std::string& name) {
  return io::load_safetensors(fixture("rlhf") / name / "reference.safetensors");
}

lm::ModelConfig tiny_config() {
  rlhf::TwoGroupWorldOptions w;
  return rlhf::world_model_config(w, 16);
}

}  // namespace

TEST(RewardModel, MatchesTransformersSequenceClassification) {
  for (const std::string name : {"gpt2-reward", "llama-reward", "qwen2-reward", "gpt2-reward-k3"}) {
    SCOPED_TRACE(name);
    auto ref = reference(name);
    rlhf::RewardModel model = rlhf::load_reward_model(fixture("rlhf") / name);
    torch::NoGradGuard no_grad;
    const at::Tensor r = model->forward(ref["input_ids"], ref["attention_mask"]);
    const at::Tensor want = ref["rewards"].dim() == 1 ? ref["rewards"].unsqueeze(1) : ref["rewards"];
    ASSERT_EQ(r.sizes(), want.sizes());
    EXPECT_LT(max_abs_diff(r, want), 1e-4);
  }
}

TEST(RewardModel, ExactParameterCountOfTheFixtures) {
  // summary.json's counts, from transformers' num_parameters().
  const Json summary = load_json_file(fixture("rlhf") / "summary.json");
  for (const std::string name : {"gpt2-reward", "llama-reward", "qwen2-reward", "gpt2-reward-k3"}) {
    rlhf::RewardModel model = rlhf::load_reward_model(fixture("rlhf") / name);
    EXPECT_EQ(model->num_parameters(), summary["fixtures"][name]["parameters"].get<int64_t>()) << name;
  }
}

TEST(RewardModel, LeftPaddingReadsTheSameLastToken) {
  auto ref = reference("llama-reward");
  rlhf::RewardModel model = rlhf::load_reward_model(fixture("rlhf") / "llama-reward");
  torch::NoGradGuard no_grad;
  const at::Tensor ids = ref["input_ids"], mask = ref["attention_mask"];
  const int64_t T = ids.size(1);
  at::Tensor left_ids = at::zeros_like(ids), left_mask = at::zeros_like(mask);
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const int64_t n = mask[b].sum().item<int64_t>();
    left_ids[b].narrow(0, T - n, n).copy_(ids[b].narrow(0, 0, n));
    left_mask[b].narrow(0, T - n, n).fill_(1);
  }
  EXPECT_LT(max_abs_diff(model->forward(left_ids, left_mask), model->forward(ids, mask)), 1e-5);
}

TEST(RewardModel, SavesWhatTransformersLoadsAndLoadsItBack) {
  TempDir dir;
  rlhf::RewardModel model = rlhf::load_reward_model(fixture("rlhf") / "gpt2-reward-k3");
  rlhf::save_reward_model(model, dir / "rm");
  const Json config = load_json_file(dir / "rm" / "config.json");
  EXPECT_EQ(config["architectures"][0], "GPT2ForSequenceClassification");
  EXPECT_EQ(config["id2label"].size(), 3u);
  EXPECT_TRUE(config.contains("pad_token_id"));
  const auto tensors = io::load_safetensors(dir / "rm" / "model.safetensors");
  EXPECT_TRUE(tensors.count("score.weight"));
  EXPECT_FALSE(tensors.count("lm_head.weight"));
  const auto want = io::load_safetensors(fixture("rlhf") / "gpt2-reward-k3" / "model.safetensors");
  EXPECT_EQ(tensors.size(), want.size());
  for (const auto& [name, t] : want) {
    ASSERT_TRUE(tensors.count(name)) << name;
    EXPECT_EQ(max_abs_diff(tensors.at(name), t), 0.0) << name;
  }
}

TEST(RewardModel, FromACausalLmFolderGetsFreshHeads) {
  rlhf::RewardModel model = rlhf::load_reward_model(fixture("lm") / "llama", {}, 2);
  EXPECT_EQ(model->num_heads(), 2);
  torch::NoGradGuard no_grad;
  const at::Tensor r = model->forward(at::randint(3, 100, {2, 6}, at::kLong));
  EXPECT_EQ(r.sizes(), (std::vector<int64_t>{2, 2}));
}

TEST(RewardModel, BadCheckpointNamesTheProblem) {
  TempDir dir;
  rlhf::RewardModel model(tiny_config(), 1);
  rlhf::save_reward_model(model, dir / "rm");
  auto tensors = io::load_safetensors(dir / "rm" / "model.safetensors");
  tensors["score.weight"] = at::zeros({1, 7});
  io::save_safetensors(dir / "rm" / "model.safetensors", tensors);
  try {
    rlhf::load_reward_model(dir / "rm");
    FAIL() << "a misshapen head loaded";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("score.weight"), std::string::npos) << e.what();
  }
}

TEST(BradleyTerry, MatchesTrlRewardTrainerLoss) {
  auto f = io::load_safetensors(fixture("rlhf") / "reward_loss_reference.safetensors");
  const at::Tensor rc = f["rewards_chosen"], rr = f["rewards_rejected"], m = f["margin"];
  EXPECT_LT(max_abs_diff(rlhf::bradley_terry_loss(rc, rr, {}).mean(), f["loss"]), 1e-6);
  EXPECT_LT(max_abs_diff(rlhf::bradley_terry_loss(rc, rr, m).mean(), f["loss_margin"]), 1e-6);
  EXPECT_LT(max_abs_diff(rlhf::bradley_terry_loss(rc, rr, {}, 0.01).mean(), f["loss_centered"]),
            1e-6);
  // Far beyond exp's range the log-sigmoid form stays finite and exact.
  const at::Tensor big = rlhf::bradley_terry_loss(at::tensor({-200.0}), at::tensor({200.0}), {});
  EXPECT_NEAR(big.item<double>(), 400.0, 1e-9);
}

TEST(BradleyTerry, GradientMatchesFiniteDifferences) {
  torch::manual_seed(0);
  rlhf::RewardModel model(tiny_config(), 2);
  model->to(at::kDouble);
  auto set = rlhf::RewardSet::shared(model);
  data::UserIndex users, groups;
  users.add("a");
  users.add("b");
  std::vector<data::PreferencePair> pairs(3);
  pairs[0] = {{1, 5, 6, 7, 2}, {1, 5, 9, 2}, 1, 0};
  pairs[1] = {{1, 4, 3, 2}, {1, 4, 8, 8, 8, 2}, 2, 1};
  pairs[2] = {{1, 6, 3, 3, 2}, {1, 6, 2}, 2, 1};
  pairs[2].margin = 0.5;
  auto data = data::PreferenceDataset::from_pairs(pairs, users, groups, 0);
  rlhf::BradleyTerryObjective objective(set, {0.01, true});
  objective.set_user_heads(at::tensor(std::vector<int64_t>{1, 0}, at::kLong));
  const auto batch = data.get_batch({0, 1, 2});
  at::Tensor w = model->score;
  model->zero_grad();
  objective.loss(batch).sum.backward();
  const at::Tensor grad = w.grad().clone();
  torch::NoGradGuard no_grad;
  const double eps = 1e-6;
  for (int64_t k = 0; k < 2; ++k) {
    for (int64_t j : {0, 5, 15}) {
      const double old = w[k][j].item<double>();
      w[k][j].fill_(old + eps);
      const double up = objective.loss(batch).sum.item<double>();
      w[k][j].fill_(old - eps);
      const double down = objective.loss(batch).sum.item<double>();
      w[k][j].fill_(old);
      EXPECT_NEAR(grad[k][j].item<double>(), (up - down) / (2 * eps), 1e-6) << k << "," << j;
    }
  }
}

TEST(RewardSet, SharedAndSeparateLayoutsAgree) {
  torch::manual_seed(1);
  rlhf::RewardModel a(tiny_config(), 1), b(tiny_config(), 1);
  auto separate = rlhf::RewardSet::separate({a, b});
  const at::Tensor ids = at::randint(3, 30, {4, 7}, at::kLong);
  at::Tensor mask = at::ones({4, 7}, at::kLong);
  mask[1].narrow(0, 5, 2).zero_();
  torch::NoGradGuard no_grad;
  const at::Tensor all = separate.all(ids, mask);
  const at::Tensor head = at::tensor(std::vector<int64_t>{1, 0, 0, 1}, at::kLong);
  const at::Tensor sel = separate.selected(ids, mask, head);
  EXPECT_LT(max_abs_diff(sel, all.gather(1, head.view({-1, 1})).squeeze(1)), 1e-6);
  EXPECT_LT(max_abs_diff(all.select(1, 0), a->forward(ids, mask).squeeze(1)), 1e-6);
  // Save and load keep the layout and the rewards.
  TempDir dir;
  separate.save(dir.path());
  auto loaded = rlhf::RewardSet::load(dir.path());
  EXPECT_EQ(loaded.size(), 2);
  EXPECT_FALSE(loaded.is_shared());
  EXPECT_LT(max_abs_diff(loaded.all(ids, mask), all), 1e-6);
}

TEST(BradleyTerry, TrainingLearnsAPlantedPreference) {
  // Users prefer the response with more planted words: a few steps must learn it.
  rlhf::TwoGroupWorldOptions w;
  w.majority_users = 6;
  w.minority_users = 1;
  w.pairs_per_user = 16;
  torch::manual_seed(2);
  lm::CausalLM reference(rlhf::world_model_config(w, 16));
  auto data = rlhf::sample_preferences(reference, w, 3);
  ASSERT_GT(data.size(), 80);
  rlhf::RewardModel model(rlhf::world_model_config(w, 16), 1);
  auto set = rlhf::RewardSet::shared(model);
  rlhf::BradleyTerryObjective objective(set);
  std::vector<int64_t> majority_only;
  for (const auto& p : data.pairs()) majority_only.push_back(p.group_index == 0 ? 0 : -1);
  rlhf::ClusterBalancedPairs source(data, majority_only, 16, 0);
  train::TrainerOptions t;
  t.max_steps = 60;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0;
  t.progress = false;
  train::Trainer trainer(set.named_modules(), t);
  const auto before = trainer.evaluate(objective, source, 4);
  trainer.fit(objective, source);
  const auto after = trainer.evaluate(objective, source, 4);
  EXPECT_GT(after.metrics.at("accuracy").value(), before.metrics.at("accuracy").value() + 0.1);
  EXPECT_GT(after.metrics.at("accuracy").value(), 0.75);
  EXPECT_LT(after.loss, before.loss);
}

TEST(PreferenceData, BadPairsAreCountedWithTheirLine) {
  TempDir dir;
  const auto file = concord::testing::write_file(
      dir / "p.jsonl",
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u1\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"same\",\"rejected\":\"same\",\"user\":\"u1\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"\",\"rejected\":\"b\",\"user\":\"u1\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u9\",\"margin\":\"x\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"c\",\"user\":\"u2\",\"margin\":1.5,\"group\":\"g\"}\n");
  data::BadRecords bad;
  data::UserIndex users;
  data::JsonlOptions skip;
  skip.on_bad = data::BadRecordPolicy::skip;
  auto records = data::read_preference_records(file, skip, &bad, &users);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(bad.count, 3);
  ASSERT_GE(bad.examples.size(), 3u);
  EXPECT_NE(bad.examples[0].find("p.jsonl:2"), std::string::npos) << bad.examples[0];
  EXPECT_NE(bad.examples[0].find("identical"), std::string::npos);
  EXPECT_NE(bad.examples[1].find("'chosen' is empty"), std::string::npos) << bad.examples[1];
  EXPECT_NE(bad.examples[2].find("margin"), std::string::npos) << bad.examples[2];
  EXPECT_DOUBLE_EQ(records[1].margin, 1.5);
  EXPECT_EQ(records[1].group, "g");
  // Held-out data of users the mixture never saw.
  data::BadRecords unknown;
  data::UserIndex known;
  known.add("u1");
  auto held = data::read_preference_records(file, skip, &unknown, &known, /*add_users=*/false);
  EXPECT_EQ(held.size(), 1u);
  EXPECT_EQ(unknown.count, 4);
  EXPECT_NE(unknown.examples.back().find("unknown user 'u2'"), std::string::npos)
      << unknown.examples.back();
  // A pair without a user: one of the user "" for a single reward model, a bad record (with its
  // line) for a mixture over users.
  const auto anonymous = concord::testing::write_file(
      dir / "a.jsonl",
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u1\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"c\"}\n"
      "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"d\",\"user\":null}\n");
  data::BadRecords pooled;
  EXPECT_EQ(data::read_preference_records(anonymous, skip, &pooled).size(), 3u);
  EXPECT_EQ(pooled.count, 0);
  data::BadRecords anon;
  data::UserIndex anon_users;
  const auto with_users = data::read_preference_records(anonymous, skip, &anon, &anon_users,
                                                        /*add_users=*/true, /*require_user=*/true);
  EXPECT_EQ(with_users.size(), 1u);
  ASSERT_EQ(anon.count, 2);  // no key, and a null one
  EXPECT_NE(anon.examples[0].find("a.jsonl:2"), std::string::npos) << anon.examples[0];
  EXPECT_NE(anon.examples[0].find("no 'user' key"), std::string::npos) << anon.examples[0];
  EXPECT_EQ(anon_users.size(), 1);
}
