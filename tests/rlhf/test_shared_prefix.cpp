// Pairs whose common prefix runs once (rlhf/shared_prefix.h): the layout on hand-made pairs,
// then the rewards and the Bradley-Terry gradients of every model family against the same pairs
// run as 2B full rows, for one model with K heads and for K separate models.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/data/preference.h"
#include "concord/lm/model_config.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/dpo.h"
#include "concord/rlhf/policy.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/rollout.h"
#include "concord/rlhf/shared_prefix.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;

namespace {

std::vector<int64_t> row(const at::Tensor& t, int64_t r) {
  const at::Tensor x = t[r].contiguous();
  return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
}

using Ids = std::vector<int64_t>;

// Right-padded [B, T] ids (pad 0) and mask of the given rows.
std::pair<at::Tensor, at::Tensor> right_padded(const std::vector<Ids>& rows) {
  int64_t t = 0;
  for (const auto& r : rows) t = std::max<int64_t>(t, static_cast<int64_t>(r.size()));
  at::Tensor ids = at::zeros({static_cast<int64_t>(rows.size()), t}, at::kLong);
  at::Tensor mask = at::zeros_like(ids);
  for (size_t b = 0; b < rows.size(); ++b) {
    for (size_t j = 0; j < rows[b].size(); ++j) {
      ids[static_cast<int64_t>(b)][static_cast<int64_t>(j)] = rows[b][j];
      mask[static_cast<int64_t>(b)][static_cast<int64_t>(j)] = 1;
    }
  }
  return {ids, mask};
}

// B pairs of a shared random prompt (min_prompt to 11 tokens) and two random responses (1 to 6
// tokens), ids in [3, vocab).
data::PreferenceDataset random_pairs(int64_t n, int64_t vocab, uint64_t seed, int64_t min_prompt = 0) {
  std::mt19937_64 rng(seed);
  auto draw = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  data::UserIndex users, groups;
  users.add("a");
  users.add("b");
  std::vector<data::PreferencePair> pairs;
  for (int64_t i = 0; i < n; ++i) {
    Ids prompt(static_cast<size_t>(draw(min_prompt, 11)));
    for (auto& t : prompt) t = draw(3, vocab - 1);
    data::PreferencePair p;
    p.chosen.assign(prompt.begin(), prompt.end());
    p.rejected = p.chosen;
    auto token = [&] { return static_cast<text::TokenId>(draw(3, vocab - 1)); };
    for (int64_t j = draw(1, 6); j > 0; --j) p.chosen.push_back(token());
    for (int64_t j = draw(1, 6); j > 0; --j) p.rejected.push_back(token());
    p.prompt_length = static_cast<int64_t>(prompt.size());
    p.user_index = i % 2;
    pairs.push_back(std::move(p));
  }
  return data::PreferenceDataset::from_pairs(std::move(pairs), users, groups, 0);
}

lm::ModelConfig pangu_config() {
  return lm::model_config_from_json(parse_json(R"({"family": "pangu_pi", "vocab_size": 97,
    "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 64, "eos_token_id": 2, "pad_token_id": 0,
    "siaf": {"terms": 3, "neighbour_kernel": 3},
    "augmented_shortcut": {"paths": 2, "reduction": 8}})", "<test>"), "<test>");
}

// A random-weight reward model of each family; SIAF and the shortcuts moved off their identity
// initialisation, so that their state in the cache matters.
std::vector<std::pair<std::string, lm::ModelConfig>> families() {
  std::vector<std::pair<std::string, lm::ModelConfig>> out;
  for (const std::string name : {"gpt2", "llama", "mistral", "qwen2", "olmo2"}) {
    out.emplace_back(name, lm::load_any_model_config(fixture("lm/" + name)));
  }
  out.emplace_back("pangu_pi", pangu_config());
  return out;
}

rlhf::RewardModel random_reward_model(const lm::ModelConfig& config, int64_t heads) {
  rlhf::RewardModel model(config, heads);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (name.find("siaf") != std::string::npos || name.find("shortcut") != std::string::npos) {
      item.value().add_(torch::randn(item.value().sizes()) * 0.3);
    }
  }
  return model;
}

}  // namespace

TEST(SharedPrefixPairs, LaysOutTheLongestCommonPrefixOnce) {
  // Pair 0 shares [1, 5]; pair 1's chosen row is a prefix of its rejected one, so the prefix
  // stops a token short of it; pair 2 shares nothing.
  auto [ci, cm] = right_padded({{1, 5, 6, 7, 2}, {1, 4, 3}, {7, 2}});
  auto [ri, rm] = right_padded({{1, 5, 9, 2}, {1, 4, 3, 8, 2}, {8, 2}});
  const auto p = rlhf::SharedPrefixPairs::build(ci, cm, ri, rm, /*pad_id=*/0);
  EXPECT_EQ(p.pairs(), 3);
  EXPECT_EQ(p.prefix_length(), 2);
  EXPECT_EQ(p.shared_tokens(), 4);
  EXPECT_EQ(p.row_tokens(), 5 + 4 + 3 + 5 + 2 + 2);
  EXPECT_EQ(p.computed_tokens(), 3 * 2 + 6 * 3);
  EXPECT_EQ(p.stacked_tokens(), 6 * 5);
  EXPECT_EQ(row(p.prefix_ids, 0), (Ids{1, 5}));
  EXPECT_EQ(row(p.prefix_ids, 1), (Ids{1, 4}));
  EXPECT_EQ(row(p.prefix_mask, 2), (Ids{0, 0}));
  // Continuations (R = 3: pair 1's rejected [3, 8, 2]), chosen rows first.
  EXPECT_EQ(row(p.continuation_ids, 0), (Ids{6, 7, 2}));
  EXPECT_EQ(row(p.continuation_ids, 1), (Ids{3, 0, 0}));
  EXPECT_EQ(row(p.continuation_ids, 2), (Ids{7, 2, 0}));
  EXPECT_EQ(row(p.continuation_ids, 3), (Ids{9, 2, 0}));
  EXPECT_EQ(row(p.continuation_ids, 4), (Ids{3, 8, 2}));
  EXPECT_EQ(row(p.continuation_ids, 5), (Ids{8, 2, 0}));
  EXPECT_EQ(row(p.attention_mask, 1), (Ids{1, 1, 1, 0, 0}));
  EXPECT_EQ(row(p.attention_mask, 5), (Ids{0, 0, 1, 1, 0}));
  EXPECT_EQ(row(p.last_index.unsqueeze(0), 0), (Ids{2, 0, 1, 1, 2, 1}));
  // A subset is laid out again on its own pairs.
  const auto last = p.subset(at::tensor(std::vector<int64_t>{2}, at::kLong));
  EXPECT_EQ(last.prefix_length(), 0);
  EXPECT_EQ(row(last.continuation_ids, 1), (Ids{8, 2}));
}

TEST(SharedPrefixPairs, ChoosesThePrefixWidthWithTheFewestTokenSlots) {
  // Sharing pair 0's 5 tokens would widen pair 1's continuations to 3 + 3 slots: a width of 3
  // computes 2 x 3 + 4 x 3 = 18 slots, 5 would compute 2 x 5 + 4 x 3 = 22, the stacked rows 24.
  auto [ci, cm] = right_padded({{1, 2, 3, 4, 5, 6}, {1, 2, 3, 9, 9, 9}});
  auto [ri, rm] = right_padded({{1, 2, 3, 4, 5, 7}, {1, 2, 3, 8, 8, 8}});
  const auto p = rlhf::SharedPrefixPairs::build(ci, cm, ri, rm, 0);
  EXPECT_EQ(p.prefix_length(), 3);
  EXPECT_EQ(p.shared_tokens(), 6);
  EXPECT_EQ(p.computed_tokens(), 18);
  EXPECT_EQ(p.stacked_tokens(), 24);
  EXPECT_EQ(row(p.continuation_ids, 0), (Ids{4, 5, 6}));
}

TEST(SharedPrefixPairs, RefusesRowsThatAreNotRightPadded) {
  auto [ci, cm] = right_padded({{1, 5, 6}});
  auto [ri, rm] = right_padded({{1, 5, 9}});
  cm[0][0] = 0;
  try {
    rlhf::SharedPrefixPairs::build(ci, cm, ri, rm, 0);
    FAIL() << "a mask with a gap was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("chosen row 0 is not right-padded"), std::string::npos)
        << e.what();
  }
  rm.zero_();
  try {
    rlhf::SharedPrefixPairs::build(ci, at::ones_like(cm), ri, rm, 0);
    FAIL() << "an empty row was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("rejected row 0 has no real token"), std::string::npos)
        << e.what();
  }
}

TEST(SharedPrefixPairs, RewardsEqualTheFullRowsInEveryFamily) {
  for (const auto& [name, config] : families()) {
    SCOPED_TRACE(name);
    torch::manual_seed(3);
    rlhf::RewardModel model = random_reward_model(config, 2);
    model->eval();
    const auto data = random_pairs(6, config.vocab_size, 5);
    const auto batch = data.get_batch({0, 1, 2, 3, 4, 5});
    const auto pairs = rlhf::SharedPrefixPairs::build(batch.chosen_ids, batch.chosen_mask,
                                                      batch.rejected_ids, batch.rejected_mask, 0);
    ASSERT_GT(pairs.prefix_length(), 3);
    auto [ids, mask] = rlhf::stack_pairs(batch, 0);
    torch::NoGradGuard no_grad;
    const at::Tensor full = model->forward(ids, mask);
    const at::Tensor shared = model->pair_rewards(pairs);
    ASSERT_EQ(shared.sizes(), full.sizes());
    EXPECT_LT(max_abs_diff(shared, full), 2e-5 * (1.0 + full.abs().max().item<double>()));
  }
}

TEST(SharedPrefixPairs, BradleyTerryGradientsEqualTheFullRows) {
  // Both layouts through the objective: the loss, its metrics and every parameter's gradient,
  // in double precision (the composite attention) and in fp32 (the fused op's segment rule).
  for (const auto dtype : {at::kDouble, at::kFloat}) {
    for (const auto& [name, config] : families()) {
      SCOPED_TRACE(name + (dtype == at::kDouble ? " fp64" : " fp32"));
      torch::manual_seed(4);
      rlhf::RewardModel model = random_reward_model(config, 2);
      model->to(dtype);
      auto set = rlhf::RewardSet::shared(model);
      const auto data = random_pairs(5, config.vocab_size, 7);
      const auto batch = data.get_batch({0, 1, 2, 3, 4});
      auto gradients = [&](bool share) {
        rlhf::BradleyTerryOptions o;
        o.center_rewards_coefficient = 0.01;
        o.share_prefixes = share;
        rlhf::BradleyTerryObjective objective(set, o);
        objective.set_user_heads(at::tensor(std::vector<int64_t>{1, 0}, at::kLong));
        model->zero_grad();
        const auto out = objective.loss(batch);
        out.sum.backward();
        std::vector<at::Tensor> g{out.sum.detach().to(at::kDouble).reshape({1}),
                                  at::tensor(out.metrics.at("margin").sum, at::kDouble).reshape({1})};
        for (const auto& p : model->parameters()) {
          EXPECT_TRUE(p.grad().defined());
          if (p.grad().defined()) g.push_back(p.grad().flatten().to(at::kDouble));
        }
        return at::cat(g, 0);
      };
      ASSERT_TRUE(rlhf::shared_prefix_layout(batch, 0).has_value());
      const at::Tensor full = gradients(false), shared = gradients(true);
      // The rotary tables are fp32 in every dtype (as transformers builds them), and at::cos
      // rounds a vectorised block and a scalar tail differently: the two layouts' tables differ
      // in the last fp32 bit. Learned positions have no such table.
      const double tol = dtype == at::kFloat ? 5e-5 : config.learned_positions ? 1e-10 : 1e-6;
      EXPECT_LT(max_abs_diff(shared, full), tol * (1.0 + full.abs().max().item<double>()));
    }
  }
}

TEST(SharedPrefixPairs, DpoResponseLogprobsAndGradientsEqualTheFullRows) {
  // The policy's summed response log-probs and their gradients, shared against stacked, in
  // every family; the prefix stops before each prompt's last token.
  for (const auto& [name, config] : families()) {
    SCOPED_TRACE(name);
    torch::manual_seed(8);
    lm::CausalLM model(config);
    {
      torch::NoGradGuard no_grad;
      for (auto& item : model->named_parameters()) {
        if (item.key().find("siaf") != std::string::npos ||
            item.key().find("shortcut") != std::string::npos) {
          item.value().add_(torch::randn(item.value().sizes()) * 0.3);
        }
      }
    }
    const auto data = random_pairs(5, config.vocab_size, 11, /*min_prompt=*/1);
    const auto batch = data.get_batch({0, 1, 2, 3, 4});
    const at::Tensor cap = (batch.prompt_lengths - 1).clamp_min(0);
    const auto layout = rlhf::shared_prefix_layout(batch, 0, true, cap);
    ASSERT_TRUE(layout.has_value());
    EXPECT_TRUE((layout->shared.le(cap)).all().item<bool>());
    auto run = [&](bool share) {
      model->zero_grad();
      const auto lp = rlhf::response_logprobs(model, batch, share);
      (lp.chosen - 0.5 * lp.rejected).sum().backward();
      std::vector<at::Tensor> g{lp.chosen.detach().to(at::kDouble), lp.rejected.detach().to(at::kDouble)};
      for (const auto& p : model->parameters()) {
        if (p.grad().defined()) g.push_back(p.grad().flatten().to(at::kDouble));
      }
      return at::cat(g, 0);
    };
    const at::Tensor full = run(false), shared = run(true);
    ASSERT_EQ(shared.sizes(), full.sizes());
    EXPECT_LT(max_abs_diff(shared, full), 5e-5 * (1.0 + full.abs().max().item<double>()));
  }
}

TEST(SharedPrefixPairs, SeparateModelsRunTheirOwnPairs) {
  torch::manual_seed(6);
  const lm::ModelConfig config = lm::load_any_model_config(fixture("lm/llama"));
  rlhf::RewardModel a = random_reward_model(config, 1), b = random_reward_model(config, 1);
  auto separate = rlhf::RewardSet::separate({a, b});
  const auto data = random_pairs(5, config.vocab_size, 9);
  const auto batch = data.get_batch({0, 1, 2, 3, 4});
  const auto pairs = rlhf::SharedPrefixPairs::build(batch.chosen_ids, batch.chosen_mask,
                                                    batch.rejected_ids, batch.rejected_mask, 0);
  auto [ids, mask] = rlhf::stack_pairs(batch, 0);
  const at::Tensor head = at::tensor(std::vector<int64_t>{1, 0, 0, 1, 1}, at::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_abs_diff(separate.selected(pairs, head),
                         separate.selected(ids, mask, at::cat({head, head}))),
            2e-5);
  EXPECT_LT(max_abs_diff(separate.all(pairs), separate.all(ids, mask)), 2e-5);
}

TEST(SharedPrefixPairs, ObjectivesFallBackToFullRowsWhenLittleIsShared) {
  // One shared token of 2 x 40: 79 slots against 80, under kMinSharedFraction.
  std::vector<data::PreferencePair> pairs(1);
  for (int64_t j = 0; j < 40; ++j) {
    pairs[0].chosen.push_back(static_cast<text::TokenId>(3 + j));
    pairs[0].rejected.push_back(static_cast<text::TokenId>(j == 0 ? 3 : 50 + j));
  }
  data::UserIndex users, groups;
  users.add("a");
  const auto data = data::PreferenceDataset::from_pairs(pairs, users, groups, 0);
  const auto batch = data.get_batch({0});
  EXPECT_FALSE(rlhf::shared_prefix_layout(batch, 0).has_value());
  EXPECT_FALSE(rlhf::shared_prefix_layout(batch, 0, /*enabled=*/false).has_value());
}

// GRPO's rollouts repeat each prompt G times. The reward models read each response after the
// prompt's columns ran once per distinct prompt (RewardModel::forward's shared_columns), and
// the response log-probs (response_outputs) likewise, in every family: equal to the full rows.
TEST(RepeatedPrompts, RewardsAndResponseLogprobsEqualTheFullRows) {
  const std::vector<Ids> prompts = {{11, 12, 13, 14, 15, 16, 17}, {21}, {31, 32, 33}};
  const std::vector<int> which = {0, 1, 0, 2, 1, 0, 2, 0};
  for (const auto& [name, config] : families()) {
    SCOPED_TRACE(name);
    torch::manual_seed(8);
    auto model = random_reward_model(config, 2);
    model->eval();
    std::mt19937_64 rng(9);
    std::vector<Ids> rows, responses;
    for (const int w : which) {
      rows.push_back(prompts[static_cast<size_t>(w)]);
      Ids r(static_cast<size_t>(std::uniform_int_distribution<int64_t>(1, 4)(rng)));
      for (auto& t : r) t = std::uniform_int_distribution<int64_t>(3, config.vocab_size - 1)(rng);
      responses.push_back(r);
    }
    const auto [prompt_ids, prompt_mask] = rlhf::pad_prompts_left(rows, 0);
    const auto [response_ids, response_mask] = right_padded(responses);
    const at::Tensor ids = at::cat({prompt_ids, response_ids}, 1);
    const at::Tensor mask = at::cat({prompt_mask, response_mask}, 1);
    const int64_t P = prompt_ids.size(1);
    torch::NoGradGuard no_grad;
    EXPECT_LT(max_abs_diff(model->forward(ids, mask, P), model->forward(ids, mask)), 1e-5);
    const auto shared =
        rlhf::response_outputs(model->backbone, ids, mask, P, 0.7, true, nullptr, true);
    const auto full =
        rlhf::response_outputs(model->backbone, ids, mask, P, 0.7, true, nullptr, false);
    const at::Tensor keep = response_mask.to(at::kFloat);
    EXPECT_LT(max_abs_diff(shared.logprobs * keep, full.logprobs * keep), 1e-5);
    EXPECT_LT(max_abs_diff(shared.entropy * keep, full.entropy * keep), 1e-5);
    // A row whose last real token lies inside the shared columns is refused.
    EXPECT_THROW(model->forward(ids, at::cat({prompt_mask, at::zeros_like(response_mask)}, 1), P),
                 Error);
  }
}

TEST(SharedPrefixPairs, BradleyTerryOnCudaMatchesCpu_CUDA) {
  // The shared-prefix pass on the device: the prefix's cache, the continuation's segment mask
  // through the fused attention's CUDA kernel, and the gradients back through both, in fp32.
  CONCORD_REQUIRE_CUDA();
  for (const auto& [name, config] : families()) {
    SCOPED_TRACE(name);
    torch::manual_seed(8);
    rlhf::RewardModel model = random_reward_model(config, 2);
    rlhf::RewardModel on_device(std::dynamic_pointer_cast<rlhf::RewardModelImpl>(model->clone()));
    on_device->to(torch::kCUDA);
    const auto data = random_pairs(5, config.vocab_size, 11, /*min_prompt=*/4);
    const auto batch = data.get_batch({0, 1, 2, 3, 4});  // CPU tensors for both
    ASSERT_TRUE(rlhf::shared_prefix_layout(batch, 0).has_value());
    auto step = [&](rlhf::RewardModel m) {
      rlhf::BradleyTerryObjective objective(rlhf::RewardSet::shared(m), {});
      objective.set_user_heads(at::tensor(std::vector<int64_t>{1, 0}, at::kLong));
      m->zero_grad();
      const auto out = objective.loss(batch);
      out.sum.backward();
      std::vector<at::Tensor> g{out.sum.detach().to(at::kCPU, at::kDouble).reshape({1})};
      for (const auto& p : m->parameters()) g.push_back(p.grad().flatten().to(at::kCPU, at::kDouble));
      return at::cat(g, 0);
    };
    const at::Tensor cpu = step(model), cuda = step(on_device);
    EXPECT_LT(max_abs_diff(cuda, cpu), 1e-4 * (1.0 + cpu.abs().max().item<double>()));
  }
}
