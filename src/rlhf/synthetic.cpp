#include "concord/rlhf/synthetic.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "concord/core/error.h"
#include "concord/rlhf/rollout.h"
#include "concord/train/next_token.h"
#include "concord/train/trainer.h"

namespace concord::rlhf {

const OptionsSchema<TwoGroupWorldOptions>& two_group_world_options_schema() {
  static const OptionsSchema<TwoGroupWorldOptions> schema = [] {
    OptionsSchema<TwoGroupWorldOptions> s("world");
    s.field("vocab_size", &TwoGroupWorldOptions::vocab_size, "tokens: pad, bos, eos and words",
            opt::at_least(8))
        .field("planted_tokens", &TwoGroupWorldOptions::planted_tokens,
               "words the majority likes (ids 3 ..)", opt::at_least(1))
        .field("prompt_length", &TwoGroupWorldOptions::prompt_length, "words of a prompt",
               opt::at_least(1))
        .field("max_response", &TwoGroupWorldOptions::max_response, "most words of a response",
               opt::at_least(2))
        .field("majority_users", &TwoGroupWorldOptions::majority_users, "users of the majority",
               opt::at_least(1))
        .field("minority_users", &TwoGroupWorldOptions::minority_users, "users of the minority",
               opt::at_least(1))
        .field("pairs_per_user", &TwoGroupWorldOptions::pairs_per_user, "pairs each user labels",
               opt::at_least(1))
        .field("length_cost", &TwoGroupWorldOptions::length_cost, "the minority's cost per word",
               opt::greater_than(0))
        .field("preference_sharpness", &TwoGroupWorldOptions::preference_sharpness,
               "s in P(y1 > y2) = sigmoid(s (r(y1) - r(y2)))", opt::greater_than(0))
        .field("seed", &TwoGroupWorldOptions::seed, "seed of prompts, responses and labels");
    return s;
  }();
  return schema;
}

std::vector<int64_t> response_words(const std::vector<int64_t>& response) {
  std::vector<int64_t> words;
  for (int64_t t : response) {
    if (t == kWorldEos || t == kWorldPad) break;
    words.push_back(t);
  }
  return words;
}

double majority_reward(const std::vector<int64_t>& response, const TwoGroupWorldOptions& o) {
  double n = 0;
  for (int64_t t : response_words(response)) {
    if (t >= kWorldFirstWord && t < kWorldFirstWord + o.planted_tokens) n += 1;
  }
  return n;
}

double minority_reward(const std::vector<int64_t>& response, const TwoGroupWorldOptions& o) {
  return -o.length_cost * static_cast<double>(response_words(response).size());
}

double true_reward(int64_t group, const std::vector<int64_t>& response,
                   const TwoGroupWorldOptions& o) {
  CONCORD_CHECK(group == 0 || group == 1, "true_reward: group must be 0 or 1, got ", group);
  return group == 0 ? majority_reward(response, o) : minority_reward(response, o);
}

lm::ModelConfig world_model_config(const TwoGroupWorldOptions& o, int64_t hidden) {
  lm::ModelConfig c;
  c.family = lm::ModelFamily::Llama;
  c.vocab_size = o.vocab_size;
  c.hidden_size = hidden;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 4;
  c.head_dim = hidden / 4;
  c.intermediate_size = 2 * hidden;
  c.max_position_embeddings = 2 * (o.prompt_length + o.max_response + 4);
  c.norm_eps = 1e-5;
  c.bos_token_id = kWorldBos;
  c.eos_token_id = kWorldEos;
  c.pad_token_id = kWorldPad;
  c.validate("two-group world model");
  return c;
}

namespace {

int64_t random_word(std::mt19937_64& rng, const TwoGroupWorldOptions& o) {
  std::uniform_int_distribution<int64_t> word(kWorldFirstWord, o.vocab_size - 1);
  return word(rng);
}

// Endless SFT batches of prompt + random response + eos; the cursor is the batch counter.
class ReferenceCorpus final : public train::BatchSource<train::TokenBatch> {
 public:
  ReferenceCorpus(const TwoGroupWorldOptions& o, uint64_t seed, int64_t batch)
      : o_(o), seed_(seed), batch_(batch) {}
  train::TokenBatch next() override {
    std::mt19937_64 rng(seed_ ^ (0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(++count_)));
    std::uniform_int_distribution<int64_t> length(1, o_.max_response);
    const int64_t T = 1 + o_.prompt_length + o_.max_response + 1;
    at::Tensor ids = at::full({batch_, T}, kWorldPad, at::kLong);
    at::Tensor targets = at::full({batch_, T}, -100, at::kLong);
    auto ia = ids.accessor<int64_t, 2>();
    auto ta = targets.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch_; ++b) {
      std::vector<int64_t> row{kWorldBos};
      for (int64_t i = 0; i < o_.prompt_length; ++i) row.push_back(random_word(rng, o_));
      const auto prompt_end = static_cast<int64_t>(row.size());
      const int64_t n = length(rng);
      for (int64_t i = 0; i < n; ++i) row.push_back(random_word(rng, o_));
      row.push_back(kWorldEos);
      for (size_t t = 0; t < row.size(); ++t) ia[b][static_cast<int64_t>(t)] = row[t];
      // Only the response and its eos are learned: position t predicts token t + 1.
      for (int64_t t = prompt_end - 1; t + 1 < static_cast<int64_t>(row.size()); ++t) {
        ta[b][t] = row[static_cast<size_t>(t + 1)];
      }
    }
    return {ids, targets};
  }
  int64_t batches_per_epoch() const override { return 1; }
  nlohmann::json state() const override { return {{"count", count_}}; }
  void load_state(const nlohmann::json& state) override { count_ = state.at("count").get<int64_t>(); }

 private:
  TwoGroupWorldOptions o_;
  uint64_t seed_;
  int64_t batch_;
  int64_t count_ = 0;
};

std::vector<int64_t> row_of(const at::Tensor& response, int64_t b) {
  const at::Tensor r = response.select(0, b).cpu().contiguous();
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()};
}

}  // namespace

std::vector<std::vector<int64_t>> world_prompts(const TwoGroupWorldOptions& o, int64_t n,
                                                uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> p{kWorldBos};
    for (int64_t j = 0; j < o.prompt_length; ++j) p.push_back(random_word(rng, o));
    prompts.push_back(std::move(p));
  }
  return prompts;
}

double train_reference_policy(lm::CausalLM model, const TwoGroupWorldOptions& o, int64_t steps,
                              double lr, uint64_t seed) {
  train::TrainerOptions t;
  t.max_steps = steps;
  t.optimizer.lr = lr;
  t.optimizer.weight_decay = 0.0;
  t.warmup_steps = std::min<int64_t>(10, steps / 10);
  t.progress = false;
  train::Trainer trainer({{"model", model.ptr()}}, t);
  train::NextTokenObjective objective(model);
  ReferenceCorpus corpus(o, seed, 32);
  const train::TrainResult result = trainer.fit(objective, corpus);
  model->eval();
  return result.final_loss;
}

lm::GenerationOptions world_generation(const TwoGroupWorldOptions& o, uint64_t seed) {
  lm::GenerationOptions g;
  g.do_sample = true;
  g.temperature = 1.0;
  g.max_new_tokens = o.max_response + 1;
  g.stop_token_ids = {kWorldEos};
  g.pad_token_id = kWorldPad;
  g.seed = seed;
  return g;
}

data::PreferenceDataset sample_preferences(lm::CausalLM reference, const TwoGroupWorldOptions& o,
                                           uint64_t seed) {
  two_group_world_options_schema().validate(o, "world");
  data::UserIndex users, groups;
  groups.add("majority");
  groups.add("minority");
  std::vector<data::PreferencePair> pairs;
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int64_t total_users = o.majority_users + o.minority_users;
  for (int64_t u = 0; u < total_users; ++u) {
    const int64_t group = u < o.majority_users ? 0 : 1;
    const int64_t number = group == 0 ? u : u - o.majority_users;
    char name[32];
    std::snprintf(name, sizeof(name), "%s_%02lld", group == 0 ? "majority" : "minority",
                  static_cast<long long>(number));
    const int64_t user = users.add(name);
    const auto prompts = world_prompts(o, o.pairs_per_user, seed * 7919 + static_cast<uint64_t>(u));
    std::vector<std::vector<int64_t>> rows;
    for (const auto& p : prompts) {
      rows.push_back(p);
      rows.push_back(p);
    }
    auto [ids, mask] = pad_prompts_left(rows, kWorldPad);
    const lm::SampledBatch s = lm::generate_tensors(
        reference, ids, mask, world_generation(o, seed * 104729 + static_cast<uint64_t>(u)));
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::vector<int64_t> y1 = row_of(s.response, static_cast<int64_t>(2 * i));
      std::vector<int64_t> y2 = row_of(s.response, static_cast<int64_t>(2 * i + 1));
      // Keep each response up to and including its eos.
      auto cut = [](std::vector<int64_t> y) {
        const auto words = response_words(y);
        std::vector<int64_t> out = words;
        if (words.size() < y.size() && y[words.size()] == kWorldEos) out.push_back(kWorldEos);
        if (out.empty()) out.push_back(kWorldEos);
        return out;
      };
      y1 = cut(y1);
      y2 = cut(y2);
      if (y1 == y2) continue;  // no preference to express
      const double p1 = 1.0 / (1.0 + std::exp(-o.preference_sharpness *
                                               (true_reward(group, y1, o) - true_reward(group, y2, o))));
      const bool first = unit(rng) < p1;
      data::PreferencePair pair;
      pair.prompt_length = static_cast<int64_t>(prompts[i].size());
      const auto& win = first ? y1 : y2;
      const auto& lose = first ? y2 : y1;
      for (const auto* side : {&win, &lose}) {
        auto& out = side == &win ? pair.chosen : pair.rejected;
        out.assign(prompts[i].begin(), prompts[i].end());
        out.insert(out.end(), side->begin(), side->end());
      }
      pair.user_index = user;
      pair.group_index = group;
      pairs.push_back(std::move(pair));
    }
  }
  return data::PreferenceDataset::from_pairs(std::move(pairs), std::move(users), std::move(groups),
                                             kWorldPad);
}

nlohmann::json GroupScore::to_json() const {
  return {{"mean_true_reward", mean_true_reward}, {"win_rate", win_rate}};
}

std::map<std::string, GroupScore> evaluate_against_reference(
    lm::CausalLM policy, lm::CausalLM reference, const std::vector<std::vector<int64_t>>& prompts,
    const TwoGroupWorldOptions& o, uint64_t seed, int64_t samples_per_prompt) {
  std::vector<std::vector<int64_t>> rows;
  for (const auto& p : prompts) {
    for (int64_t k = 0; k < samples_per_prompt; ++k) rows.push_back(p);
  }
  auto [ids, mask] = pad_prompts_left(rows, kWorldPad);
  const bool policy_training = policy->is_training();
  policy->eval();
  const lm::SampledBatch a = lm::generate_tensors(policy, ids, mask, world_generation(o, seed));
  policy->train(policy_training);
  const lm::SampledBatch b = lm::generate_tensors(reference, ids, mask, world_generation(o, seed + 1));
  std::map<std::string, GroupScore> out;
  const int64_t n = static_cast<int64_t>(rows.size());
  for (int64_t group = 0; group < 2; ++group) {
    GroupScore s;
    for (int64_t i = 0; i < n; ++i) {
      const double rp = true_reward(group, row_of(a.response, i), o);
      const double rr = true_reward(group, row_of(b.response, i), o);
      s.mean_true_reward += rp;
      s.win_rate += rp > rr ? 1.0 : rp == rr ? 0.5 : 0.0;
    }
    s.mean_true_reward /= static_cast<double>(n);
    s.win_rate /= static_cast<double>(n);
    out[group == 0 ? "majority" : "minority"] = s;
  }
  return out;
}

}  // namespace concord::rlhf
