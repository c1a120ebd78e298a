// MaxMin-RLHF's two training loops, timed for benchmarks/bench_reward_step.py and
// benchmarks/bench_ppo_iteration.py, which time TRL 1.12.0's RewardTrainer step and PPOTrainer
// iteration (the baselines, named there) on the same model folders and data in the same run and
// print the ratio. Each subcommand prints one JSON line: the mean seconds per step / iteration
// over the timed ones, the per-step times, and where the time goes (the "phases_ms" object).
//
//   bench_rlhf reward --model DIR --data PAIRS.jsonl --batch-size B --max-length L --steps S
//                     --warmup W --threads N [--share-prefixes on|off]
//
// A Bradley-Terry reward-model step (rlhf::BradleyTerryObjective through train::Trainer: one
// batch of B pairs = 2B rows, forward, -log sigmoid(r_c - r_r), backward, global-norm clipping at
// 1, AdamW) on DIR, a GPT2ForSequenceClassification folder with its tokenizer.json
// (rlhf::load_reward_model). The pairs are tokenised as TRL's RewardTrainer tokenises data
// without a chat template: prompt + chosen as one string, then the EOS id (TRL appends the EOS
// text, a special token of one id), so every row has TRL's token ids and count (data::
// PreferenceDataset::from_pairs; Concord's own chat templates would add "Question:"/"Answer:"
// around the prompt). A pair longer than L is refused, where TRL would drop it. Optimiser as
// TRL's RewardConfig: lr 1e-4 with linear decay, betas (0.9, 0.999), eps 1e-8, weight decay 0,
// max_grad_norm 1, fp32. --share-prefixes on (the objective's default) runs each pair's common
// prefix once (rlhf/shared_prefix.h) when that saves at least rlhf::kMinSharedFraction of the
// token slots; "tokens_run_per_step" says how many slots (padding included) the model ran. A step
// is timed from the end of one optimizer step to the end of the next, collation included, as on the
// TRL side. phases_ms: collate and train_step (medians over the timed steps), then from as many
// profiled steps after them: profiled_forward (the loss, autograd on), profiled_backward,
// profiled_train_step (the Trainer's whole step on the same batch) and profiled_optimizer_and_rest
// (that step less a forward and a backward: zeroing, clipping, AdamW, metrics).
//
//   bench_rlhf ppo --policy DIR --reward DIR --prompts PROMPTS.jsonl --batch-size B
//                  --response-length R --ppo-epochs E --minibatches M --iterations I --warmup W
//                  --threads N
//
// rlhf::PpoTrainer iterations: the policy is DIR (a GPT2LMHeadModel folder, lm::load_pretrained)
// with a value head (rlhf::PolicyWithValue), the reference a clone of it, the reward
// RewardSet::shared(load_reward_model(reward DIR)) through the "single" aggregator. Options as
// TRL 1.12's PPOConfig: kl_coef 0.05 fixed (adaptive_kl off), k1 KL, cliprange 0.2 and 0.2 for
// the value, vf_coef 0.1, gamma 1, lam 0.95, lr 3e-6 with linear decay, betas (0.9, 0.999),
// weight decay 0, no gradient clipping (TRL's PPO loop steps the optimizer without
// clip_grad_norm_), mini_batch_size B / M, E epochs; sampling at temperature 0.7, top_k 0,
// top_p 1. No stop token: stop_token_ids {-1}, an id no token has (an empty list would fall back
// to the config's EOS), so every response is exactly R tokens, as with TRL's stop_token None.
// Prompts are token ids of PROMPTS.jsonl's "prompt" (no special tokens, as TRL's tokenizer call
// for GPT-2); iteration i uses prompts [i B, (i + 1) B).
//
//   bench_rlhf grpo --policy DIR --reward DIR --prompts PROMPTS.jsonl --batch-size B
//                   --generations G --response-length R --mini-batch-size M --iterations I
//                   --warmup W --threads N [--share-prompts on|off]
//
// rlhf::GrpoTrainer iterations on the same folders: B prompts, G responses each (temperature
// 0.7, exactly R tokens: no stop token), the reference's and the reward model's passes, then
// B G / M Trainer steps of M responses (beta 0.04, epsilon 0.2, loss_type grpo, lr 1e-6 linear,
// clipping at norm 1, fp32). --share-prompts off runs every row's prompt (generation's
// share_prompts off: sampling, the reference, the reward model and the updates); on, the default,
// runs each prompt once per pass (lm/repeated_prefix.h). The two are the same computation up to
// summation order; benchmarks/bench_grpo_iteration.py times both in one run.
//
// The design difference, kept and not hidden: TRL 1.12's PPOTrainer trains a separate value
// model (initialised from the reward folder: a second GPT-2 backbone, run forward in the
// rollout and forward + backward in every minibatch, with its own AdamW state). Concord's
// PolicyWithValue puts the value head on the policy's backbone (the layout of TRL's older
// AutoModelForCausalLMWithValueHead, which MaxMin-RLHF's code used), so a minibatch runs one
// backbone instead of two. TRL also computes the LM head over the prompt columns it then drops;
// Concord reads only the R response positions. The PPO losses are the same; the value function's
// model differs, and Concord does less work (about half the update's arithmetic at GPT-2 mini's
// shape): both show in the ratio. The JSON says so under "value_model".
//
// phases_ms for ppo: after the timed iterations, as many again run phase by phase, each phase
// through the public function PpoTrainer::step calls for it, and the medians are reported:
// generate (lm::generate_tensors: the prompt pass and R cached decode steps), reference (the
// reference's log-probs), reward (the reward model's forward), policy_value (old log-probs and
// values), update (E x M Trainer steps on minibatches of B / M rollouts); their sum beside the
// timed mean (the difference: GAE, whitening, metrics, batching, and noise).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "concord/core/runtime.h"
#include "concord/data/preference.h"
#include "concord/data/records.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/grpo.h"
#include "concord/rlhf/policy.h"
#include "concord/rlhf/ppo.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/rollout.h"
#include "concord/text/tokenizer.h"
#include "concord/train/trainer.h"

namespace fs = std::filesystem;
namespace data = concord::data;
namespace lm = concord::lm;
namespace rlhf = concord::rlhf;
namespace text = concord::text;
namespace train = concord::train;

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double mean_of(const std::vector<double>& v) {
  return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Each flag once, with its default ("" = required) and help.
struct Flag {
  std::string name, value, help;
};

struct Command {
  std::string name;
  std::vector<Flag> flags;

  std::string usage() const {
    std::string u = "bench_rlhf " + name;
    for (const auto& f : flags) {
      u += f.value.empty() ? " --" + f.name + " " + f.help
                           : " [--" + f.name + " " + f.help + " (" + f.value + ")]";
    }
    return u;
  }
};

const std::vector<Command>& commands() {
  static const std::vector<Command> c = {
      {"reward",
       {{"model", "", "DIR (GPT2ForSequenceClassification + tokenizer.json)"},
        {"data", "", "PAIRS.jsonl"},
        {"batch-size", "4", "pairs per step"},
        {"max-length", "128", "most tokens per row, EOS included"},
        {"steps", "3", "timed steps"},
        {"warmup", "1", "untimed steps first"},
        {"threads", "2", "intra-op threads"},
        {"share-prefixes", "on", "on|off: each pair's common prefix run once"}}},
      {"ppo",
       {{"policy", "", "DIR (GPT2LMHeadModel + tokenizer.json)"},
        {"reward", "", "DIR (GPT2ForSequenceClassification)"},
        {"prompts", "", "PROMPTS.jsonl"},
        {"batch-size", "8", "prompts per iteration"},
        {"response-length", "32", "sampled tokens per prompt"},
        {"ppo-epochs", "2", "passes over each batch"},
        {"minibatches", "2", "optimizer steps per epoch"},
        {"iterations", "2", "timed iterations"},
        {"warmup", "1", "untimed iterations first"},
        {"threads", "2", "intra-op threads"}}},
      {"grpo",
       {{"policy", "", "DIR (GPT2LMHeadModel + tokenizer.json)"},
        {"reward", "", "DIR (GPT2ForSequenceClassification)"},
        {"prompts", "", "PROMPTS.jsonl"},
        {"batch-size", "4", "prompts per iteration"},
        {"generations", "8", "G: responses per prompt"},
        {"response-length", "32", "sampled tokens per response"},
        {"mini-batch-size", "16", "responses per optimizer step"},
        {"iterations", "2", "timed iterations"},
        {"warmup", "1", "untimed iterations first"},
        {"threads", "2", "intra-op threads"},
        {"share-prompts", "on", "on|off: each prompt's columns run once for its G rows"}}},
  };
  return c;
}

std::string all_usage() {
  std::string u = "usage:\n";
  for (const auto& c : commands()) u += "  " + c.usage() + "\n";
  return u;
}

// flag -> value, defaults filled in; unknown or missing flags throw with the usage.
std::map<std::string, std::string> parse_flags(const Command& command, int argc, char** argv) {
  std::map<std::string, std::string> out;
  for (const auto& f : command.flags) {
    if (!f.value.empty()) out[f.name] = f.value;
  }
  for (int i = 2; i < argc; i += 2) {
    std::string flag = argv[i];
    const bool known = flag.rfind("--", 0) == 0 &&
                       std::any_of(command.flags.begin(), command.flags.end(),
                                   [&](const Flag& f) { return "--" + f.name == flag; });
    if (!known || i + 1 >= argc) {
      throw std::invalid_argument((known ? "no value for " : "unknown flag ") + flag + "\n" +
                                  all_usage());
    }
    out[flag.substr(2)] = argv[i + 1];
  }
  for (const auto& f : command.flags) {
    if (!out.count(f.name)) throw std::invalid_argument("missing --" + f.name + "\n" + all_usage());
  }
  return out;
}

int64_t positive(const std::map<std::string, std::string>& flags, const std::string& name,
                 int64_t least = 1) {
  const int64_t v = std::stoll(flags.at(name));
  if (v < least) {
    throw std::invalid_argument("--" + name + " must be >= " + std::to_string(least) + ", got " +
                                flags.at(name));
  }
  return v;
}

bool on_off(const std::map<std::string, std::string>& flags, const std::string& name) {
  const std::string& v = flags.at(name);
  if (v != "on" && v != "off")
    throw std::invalid_argument("--" + name + " must be on or off, got " + v);
  return v == "on";
}

// LibTorch's and OpenBLAS's pools both sized to N (init_runtime reads CONCORD_NUM_THREADS).
void set_threads(int64_t threads) {
  setenv("CONCORD_NUM_THREADS", std::to_string(threads).c_str(), 1);
  concord::init_runtime();
  at::set_num_threads(static_cast<int>(threads));
}

int64_t eos_of(const lm::ModelConfig& config, const text::Tokenizer& tokenizer) {
  if (config.eos_token_id) return *config.eos_token_id;
  if (auto eos = tokenizer.eos_id()) return *eos;
  throw std::invalid_argument("neither the model config nor the tokenizer names an EOS token");
}

// ---------------------------------------------------------------------------------------------

nlohmann::json run_reward(const std::map<std::string, std::string>& flags) {
  const int64_t B = positive(flags, "batch-size"), L = positive(flags, "max-length");
  const int64_t steps = positive(flags, "steps"), warmup = positive(flags, "warmup", 0);
  const fs::path dir = flags.at("model");
  torch::manual_seed(0);
  rlhf::RewardModel model = rlhf::load_reward_model(dir);
  const auto tokenizer = text::load_tokenizer(dir);
  const int64_t eos = eos_of(model->backbone->config, *tokenizer);

  // TRL's tokenisation of data without a chat template: prompt + response as one string, EOS.
  data::UserIndex users;
  const std::vector<data::PreferenceRecord> records =
      data::read_preference_records(flags.at("data"), {}, nullptr, &users);
  std::vector<data::PreferencePair> pairs;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    data::PreferencePair p;
    p.chosen = tokenizer->encode(r.prompt + r.chosen);
    p.rejected = tokenizer->encode(r.prompt + r.rejected);
    p.chosen.push_back(static_cast<text::TokenId>(eos));
    p.rejected.push_back(static_cast<text::TokenId>(eos));
    p.prompt_length = static_cast<int64_t>(tokenizer->encode(r.prompt).size());
    p.user_index = r.user_index;
    p.margin = r.margin;
    if (static_cast<int64_t>(std::max(p.chosen.size(), p.rejected.size())) > L) {
      throw std::invalid_argument("pair " + std::to_string(i) + " is longer than --max-length " +
                                  std::to_string(L) +
                                  " (TRL would drop it; the runs would differ)");
    }
    pairs.push_back(std::move(p));
  }
  const int64_t total = warmup + steps;
  if (static_cast<int64_t>(pairs.size()) < total * B) {
    throw std::invalid_argument(flags.at("data") + " holds " + std::to_string(pairs.size()) +
                                " pairs; " + std::to_string(total) + " steps of " +
                                std::to_string(B) + " need " + std::to_string(total * B));
  }
  const data::PreferenceDataset dataset =
      data::PreferenceDataset::from_pairs(std::move(pairs), users, {}, eos);

  rlhf::RewardSet rewards = rlhf::RewardSet::shared(model);
  rlhf::BradleyTerryOptions bt;
  bt.share_prefixes = on_off(flags, "share-prefixes");
  rlhf::BradleyTerryObjective objective(rewards, bt);
  train::TrainerOptions t;
  t.max_steps = total + steps;  // + the profiled steps after the timed ones
  t.optimizer.lr = 1e-4;
  t.optimizer.beta1 = 0.9;
  t.optimizer.beta2 = 0.999;
  t.optimizer.eps = 1e-8;
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "linear";
  t.warmup_steps = 0;
  t.max_grad_norm = 1.0;
  t.precision = "fp32";
  t.progress = false;
  train::Trainer trainer(rewards.named_modules(), t);

  auto batch_of = [&](int64_t s) {
    std::vector<int64_t> idx(static_cast<size_t>(B));
    std::iota(idx.begin(), idx.end(), (s % (dataset.size() / B)) * B);
    return dataset.get_batch(idx);
  };
  std::vector<double> step_s, collate_s, train_s, losses;
  int64_t tokens_per_step = 0, tokens_run_per_step = 0;
  for (int64_t s = 0; s < total; ++s) {
    const auto t0 = Clock::now();
    data::PreferenceBatch batch = batch_of(s);
    const auto t1 = Clock::now();
    const int64_t tokens =
        batch.chosen_mask.sum().item<int64_t>() + batch.rejected_mask.sum().item<int64_t>();
    // What the objective runs: the rows' tokens less the prefixes it runs once (outside the
    // timed span, like the token count).
    const auto shared = rlhf::shared_prefix_layout(batch, eos, bt.share_prefixes);
    const int64_t run =
        shared ? shared->computed_tokens()
               : 2 * B * std::max(batch.chosen_ids.size(1), batch.rejected_ids.size(1));
    const auto t1b = Clock::now();
    const train::StepStats stats = trainer.train_step(objective, {std::move(batch)});
    const auto t2 = Clock::now();
    losses.push_back(stats.loss);
    if (s >= warmup) {
      step_s.push_back(seconds(t0, t1) + seconds(t1b, t2));
      collate_s.push_back(seconds(t0, t1));
      train_s.push_back(seconds(t1b, t2));
      tokens_per_step = tokens;
      tokens_run_per_step = run;
    }
  }

  // Profiled steps (as many as the timed ones): the objective's forward and the backward alone,
  // then the Trainer's whole step on the same batch (its zeroing of the gradients, clipping and
  // AdamW are what it adds to a forward and a backward).
  std::vector<double> forward_s, backward_s, whole_s;
  for (int64_t s = 0; s < steps; ++s) {
    const data::PreferenceBatch batch = batch_of(warmup + s);
    const auto p0 = Clock::now();
    const train::LossSum ls = objective.loss(batch);
    const at::Tensor loss = ls.sum / static_cast<double>(objective.count(batch));
    const auto p1 = Clock::now();
    loss.backward();
    const auto p2 = Clock::now();
    trainer.train_step(objective, {batch});
    const auto p3 = Clock::now();
    forward_s.push_back(seconds(p0, p1));
    backward_s.push_back(seconds(p1, p2));
    whole_s.push_back(seconds(p2, p3));
  }
  const double forward = median_of(forward_s), backward = median_of(backward_s);
  const double whole = median_of(whole_s);

  return {{"benchmark", "reward_step"},
          {"seconds_per_step", mean_of(step_s)},
          {"median_step_seconds", median_of(step_s)},
          {"step_seconds", step_s},
          {"steps", steps},
          {"warmup", warmup},
          {"tokens_per_step", tokens_per_step},
          {"tokens_run_per_step", tokens_run_per_step},
          {"share_prefixes", bt.share_prefixes},
          {"losses", losses},
          {"phases_ms",
           {{"collate", 1e3 * median_of(collate_s)},
            {"train_step", 1e3 * median_of(train_s)},
            {"profiled_forward", 1e3 * forward},
            {"profiled_backward", 1e3 * backward},
            {"profiled_train_step", 1e3 * whole},
            {"profiled_optimizer_and_rest", 1e3 * std::max(0.0, whole - forward - backward)}}},
          {"parameters", model->num_parameters()},
          {"threads", at::get_num_threads()},
          {"libtorch", TORCH_VERSION}};
}

// ---------------------------------------------------------------------------------------------

std::vector<std::vector<int64_t>> read_prompts(const fs::path& path, const text::Tokenizer& tok) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("cannot read " + path.string());
  std::vector<std::vector<int64_t>> prompts;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string()) {
      throw std::invalid_argument(path.string() + ":" + std::to_string(number) +
                                  ": expected {\"prompt\": string}");
    }
    const auto ids = tok.encode(j["prompt"].get<std::string>());
    if (ids.empty()) {
      throw std::invalid_argument(path.string() + ":" + std::to_string(number) + ": empty prompt");
    }
    prompts.emplace_back(ids.begin(), ids.end());
  }
  return prompts;
}

// What the ppo and grpo commands start from: the policy (--policy), a frozen copy as the
// reference, the reward model (--reward) and the prompts, enough for `iterations` batches of B.
struct PolicySetup {
  lm::CausalLM policy{nullptr}, reference{nullptr};
  rlhf::RewardSet rewards;
  std::vector<std::vector<int64_t>> prompts;
  int64_t batch_size = 0;

  /// Iteration i's prompts: [i B, (i + 1) B).
  std::vector<std::vector<int64_t>> batch(int64_t i) const {
    return {prompts.begin() + i * batch_size, prompts.begin() + (i + 1) * batch_size};
  }
};

PolicySetup load_policy_setup(const std::map<std::string, std::string>& flags, int64_t B,
                              int64_t iterations) {
  const fs::path policy_dir = flags.at("policy");
  torch::manual_seed(0);
  PolicySetup s;
  s.policy = lm::load_pretrained(policy_dir);
  s.reference = std::dynamic_pointer_cast<lm::CausalLMImpl>(s.policy->clone());
  s.rewards = rlhf::RewardSet::shared(rlhf::load_reward_model(flags.at("reward")));
  s.prompts = read_prompts(flags.at("prompts"), *text::load_tokenizer(policy_dir));
  s.batch_size = B;
  if (static_cast<int64_t>(s.prompts.size()) < iterations * B) {
    throw std::invalid_argument(flags.at("prompts") + " holds " + std::to_string(s.prompts.size()) +
                                " prompts; " + std::to_string(iterations) + " iterations of " +
                                std::to_string(B) + " need " + std::to_string(iterations * B));
  }
  return s;
}

nlohmann::json run_ppo(const std::map<std::string, std::string>& flags) {
  const int64_t B = positive(flags, "batch-size"), R = positive(flags, "response-length");
  const int64_t E = positive(flags, "ppo-epochs"), M = positive(flags, "minibatches");
  const int64_t iterations = positive(flags, "iterations"), warmup = positive(flags, "warmup", 0);
  if (B % M != 0) throw std::invalid_argument("--batch-size must be a multiple of --minibatches");
  const int64_t total = warmup + iterations;
  PolicySetup setup = load_policy_setup(flags, B, total);
  lm::CausalLM policy = setup.policy, reference = setup.reference;
  rlhf::RewardSet rewards = setup.rewards;
  auto batch_of = [&](int64_t i) { return setup.batch(i); };

  rlhf::PolicyWithValue actor(policy);
  rlhf::PpoOptions o;
  o.batch_size = B;
  o.mini_batch_size = B / M;
  o.ppo_epochs = E;
  o.init_kl_coef = 0.05;
  o.adaptive_kl = false;
  o.kl_estimator = "k1";
  o.cliprange = 0.2;
  o.cliprange_value = 0.2;
  o.vf_coef = 0.1;
  o.gamma = 1.0;
  o.lam = 0.95;
  o.seed = 0;
  rlhf::RolloutOptions ro;
  ro.generation.do_sample = true;
  ro.generation.temperature = 0.7;
  ro.generation.top_k = 0;
  ro.generation.top_p = 1.0;
  ro.generation.max_new_tokens = R;
  ro.generation.stop_token_ids = {-1};  // no token has it: every response runs R tokens
  train::TrainerOptions t;
  t.max_steps = (total + iterations) * E * M;  // + the profiled iterations after the timed ones
  t.optimizer.lr = 3e-6;
  t.optimizer.beta1 = 0.9;
  t.optimizer.beta2 = 0.999;
  t.optimizer.eps = 1e-8;
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "linear";
  t.warmup_steps = 0;
  t.max_grad_norm = 0.0;
  t.precision = "fp32";
  t.progress = false;
  rlhf::PpoTrainer ppo(actor, reference, rewards, rlhf::make_aggregator({"single"}), o, ro, t);

  std::vector<double> iter_s;
  nlohmann::json last_metrics;
  for (int64_t i = 0; i < total; ++i) {
    const auto t0 = Clock::now();
    const rlhf::PpoIteration it = ppo.step(batch_of(i));
    const auto t1 = Clock::now();
    if (i >= warmup) iter_s.push_back(seconds(t0, t1));
    last_metrics = it.to_json();
  }
  const double per_iteration = mean_of(iter_s);

  // Profiled iterations (as many as the timed ones), phase by phase, through the functions
  // PpoTrainer::step calls; the medians are reported.
  int64_t P = 0;  // prompt columns
  std::map<std::string, std::vector<double>> phase;
  at::Generator generator = at::detail::createCPUGenerator(1);
  rlhf::PpoObjective objective(actor, o, ro.generation.temperature);
  int64_t response_tokens = 0;
  for (int64_t i = 0; i < iterations; ++i) {
    const auto [ids, mask] =
        rlhf::pad_prompts_left(batch_of(warmup + i), *policy->config.eos_token_id);
    P = ids.size(1);
    auto p0 = Clock::now();
    policy->eval();
    const lm::SampledBatch sampled =
        lm::generate_tensors(policy, ids, mask, ro.generation, generator);
    policy->train();
    auto p1 = Clock::now();
    phase["generate"].push_back(seconds(p0, p1));
    response_tokens = sampled.response_mask.sum().item<int64_t>();
    const at::Tensor response_mask = sampled.response_mask.to(at::kFloat);
    at::Tensor old_logprobs, values;
    {
      c10::InferenceMode guard;
      p0 = Clock::now();
      rlhf::response_outputs(reference, sampled.sequences, sampled.attention_mask, ids.size(1),
                             ro.generation.temperature);
      p1 = Clock::now();
      phase["reference"].push_back(seconds(p0, p1));
      rewards.all(sampled.sequences, sampled.attention_mask);
      const auto p2 = Clock::now();
      phase["reward"].push_back(seconds(p1, p2));
      const rlhf::ResponseOutputs out =
          rlhf::response_outputs(policy, sampled.sequences, sampled.attention_mask, ids.size(1),
                                 ro.generation.temperature, false, actor->value_head);
      const auto p3 = Clock::now();
      phase["policy_value"].push_back(seconds(p2, p3));
      old_logprobs = out.logprobs * response_mask;
      values = out.values * response_mask;
    }
    // Advantages of the right shape; the work of a step does not depend on their values.
    const at::Tensor advantages = at::randn({B, R}, generator) * response_mask;
    p0 = Clock::now();
    for (int64_t e = 0; e < E; ++e) {
      const at::Tensor perm = at::randperm(B, generator, at::kLong);
      for (int64_t m = 0; m < M; ++m) {
        const at::Tensor rows = perm.narrow(0, m * (B / M), B / M);
        rlhf::PpoBatch b;
        b.prompt_length = ids.size(1);
        b.sequences = sampled.sequences.index_select(0, rows);
        b.attention_mask = sampled.attention_mask.index_select(0, rows);
        b.mask = response_mask.index_select(0, rows);
        b.old_logprobs = old_logprobs.index_select(0, rows);
        b.old_values = values.index_select(0, rows);
        b.advantages = advantages.index_select(0, rows);
        b.returns = values.index_select(0, rows);
        ppo.trainer().train_step(objective, {std::move(b)});
      }
    }
    p1 = Clock::now();
    phase["update"].push_back(seconds(p0, p1));
  }
  nlohmann::json phases_ms;
  double measured = 0;
  for (const auto& [name, s] : phase) {
    phases_ms[name] = 1e3 * median_of(s);
    measured += median_of(s);
  }
  phases_ms["profiled_sum"] = 1e3 * measured;
  phases_ms["timed_iteration_minus_profiled_sum"] = 1e3 * (per_iteration - measured);

  return {{"benchmark", "ppo_iteration"},
          {"seconds_per_iteration", per_iteration},
          {"median_iteration_seconds", median_of(iter_s)},
          {"iteration_seconds", iter_s},
          {"iterations", iterations},
          {"warmup", warmup},
          {"response_tokens_per_iteration", response_tokens},
          {"prompt_tokens", P},
          {"phases_ms", phases_ms},
          {"value_model", "value head on the policy's backbone (PolicyWithValue); TRL 1.12 trains "
                          "a separate value model, a second backbone"},
          {"last_metrics", last_metrics},
          {"policy_parameters", policy->num_parameters()},
          {"threads", at::get_num_threads()},
          {"libtorch", TORCH_VERSION}};
}

nlohmann::json run_grpo(const std::map<std::string, std::string>& flags) {
  const int64_t B = positive(flags, "batch-size"), G = positive(flags, "generations", 2);
  const int64_t R = positive(flags, "response-length"), mb = positive(flags, "mini-batch-size");
  const int64_t iterations = positive(flags, "iterations"), warmup = positive(flags, "warmup", 0);
  const bool share = on_off(flags, "share-prompts");
  const int64_t total = warmup + iterations;
  PolicySetup setup = load_policy_setup(flags, B, total);
  lm::CausalLM policy = setup.policy;
  rlhf::GrpoOptions o;
  o.batch_size = B;
  o.num_generations = G;
  o.mini_batch_size = mb;
  o.num_iterations = 1;
  o.beta = 0.04;
  o.epsilon = 0.2;
  o.loss_type = "grpo";
  o.seed = 0;
  rlhf::RolloutOptions ro;
  ro.generation.do_sample = true;
  ro.generation.temperature = 0.7;
  ro.generation.max_new_tokens = R;
  ro.generation.stop_token_ids = {-1};  // no token has it: every response runs R tokens
  ro.generation.share_prompts = share;
  train::TrainerOptions t;
  t.max_steps = total * ((B * G + mb - 1) / mb);
  t.optimizer.lr = 1e-6;
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "linear";
  t.max_grad_norm = 1.0;
  t.precision = "fp32";
  t.progress = false;
  rlhf::GrpoTrainer grpo(policy, setup.reference, setup.rewards, rlhf::make_aggregator({"single"}),
                         o, ro, t);
  std::vector<double> iter_s;
  nlohmann::json last_metrics;
  for (int64_t i = 0; i < total; ++i) {
    const auto batch = setup.batch(i);
    const auto t0 = Clock::now();
    const rlhf::GrpoIteration it = grpo.step(batch);
    const auto t1 = Clock::now();
    if (i >= warmup) iter_s.push_back(seconds(t0, t1));
    last_metrics = it.to_json();
  }
  int64_t longest_prompt = 0;
  for (const auto& p : setup.prompts)
    longest_prompt = std::max<int64_t>(longest_prompt, static_cast<int64_t>(p.size()));
  return {{"benchmark", "grpo_iteration"},
          {"seconds_per_iteration", mean_of(iter_s)},
          {"median_iteration_seconds", median_of(iter_s)},
          {"iteration_seconds", iter_s},
          {"iterations", iterations},
          {"warmup", warmup},
          {"share_prompts", share},
          {"rows_per_iteration", B * G},
          {"longest_prompt_tokens", longest_prompt},
          {"last_metrics", last_metrics},
          {"policy_parameters", policy->num_parameters()},
          {"threads", at::get_num_threads()},
          {"libtorch", TORCH_VERSION}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "%s", all_usage().c_str());
    return 2;
  }
  const std::string name = argv[1];
  const auto command = std::find_if(commands().begin(), commands().end(),
                                    [&](const Command& c) { return c.name == name; });
  if (command == commands().end()) {
    std::fprintf(stderr, "bench_rlhf: unknown subcommand '%s'\n%s", name.c_str(),
                 all_usage().c_str());
    return 2;
  }
  std::map<std::string, std::string> flags;
  try {
    flags = parse_flags(*command, argc, argv);
    set_threads(positive(flags, "threads"));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rlhf %s: %s\n", name.c_str(), e.what());
    return 2;
  }
  try {
    const nlohmann::json result = name == "reward" ? run_reward(flags)
                                  : name == "ppo"  ? run_ppo(flags)
                                                   : run_grpo(flags);
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_rlhf %s: %s\n", name.c_str(), e.what());
    return 1;
  }
  return 0;
}
