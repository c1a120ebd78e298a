#include "task_policy.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/runtime.h"
#include "concord/data/chat_template.h"
#include "concord/data/jsonl.h"
#include "concord/data/preference.h"
#include "concord/data/sampler.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/rlhf/aggregate.h"
#include "concord/rlhf/dpo.h"
#include "concord/rlhf/grpo.h"
#include "concord/rlhf/ppo.h"
#include "concord/rlhf/reward_model.h"
#include "concord/text/tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/checkpoint.h"
#include "concord/train/trainer.h"
#include "concord/tasks/model_loading.h"
#include "metric_chart.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

train::TrainerOptions policy_train_defaults() {
  train::TrainerOptions t;
  t.optimizer.lr = 1.41e-5;  // TRL's PPOConfig (the paper's) learning rate
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "constant";
  t.progress = false;
  return t;
}

void save_policy(lm::CausalLM model, const std::string& tokenizer_path, const fs::path& out) {
  lm::save_pretrained(model, out);
  if (fs::is_regular_file(tokenizer_path)) {
    write_file_atomic(out / fs::path(tokenizer_path).filename(), read_file(tokenizer_path));
  } else if (fs::is_regular_file(fs::path(tokenizer_path) / "tokenizer.json")) {
    write_file_atomic(out / "tokenizer.json", read_file(fs::path(tokenizer_path) / "tokenizer.json"));
  }
}


// ---- ppo ------------------------------------------------------------------------------------

struct PpoTaskOptions {
  std::string policy;
  std::string weights;
  std::string tokenizer;
  std::string rewards;
  std::string prompts;
  std::string chat_template = "plain";
  std::string algorithm = "ppo";
  int64_t iterations = 100;
  int64_t checkpoint_every = 0;
  std::string on_bad_record = "skip";
  std::string device = "cpu";
  std::string frozen_dtype = "float32";
  bool save_model = true;
  rlhf::AggregatorOptions aggregator;
  rlhf::PpoOptions ppo;
  rlhf::GrpoOptions grpo;
  lm::GenerationOptions generation = [] {
    lm::GenerationOptions g;
    g.do_sample = true;
    g.max_new_tokens = 53;  // TRL's response_length
    g.temperature = 0.7;    // TRL's PPOConfig temperature
    return g;
  }();
  train::TrainerOptions train = policy_train_defaults();
};

const OptionsSchema<PpoTaskOptions>& ppo_task_schema() {
  static const OptionsSchema<PpoTaskOptions> schema = [] {
    OptionsSchema<PpoTaskOptions> s("ppo task");
    s.field("policy", &PpoTaskOptions::policy,
            "the starting policy (also the frozen reference): a causal LM folder or a model config",
            opt::required())
        .field("weights", &PpoTaskOptions::weights, "safetensors weights for a model config file")
        .field("tokenizer", &PpoTaskOptions::tokenizer,
               "tokenizer.json, .model, a folder, or 'bytes' (default: the policy folder)")
        .field("rewards", &PpoTaskOptions::rewards,
               "a reward model folder (reward task) or a reward_em run's rewards/ folder",
               opt::required())
        .field("prompts", &PpoTaskOptions::prompts, "JSONL of {\"prompt\"} records", opt::required())
        .field("chat_template", &PpoTaskOptions::chat_template,
               "renders each prompt as the reward models' data did")
        .field("algorithm", &PpoTaskOptions::algorithm,
               "ppo (value head, GAE) or grpo (group-relative, no value head)",
               opt::one_of({"ppo", "grpo"}))
        .field("iterations", &PpoTaskOptions::iterations, "rollout-and-update iterations",
               opt::at_least(1))
        .field("checkpoint_every", &PpoTaskOptions::checkpoint_every,
               "iterations between checkpoints (0: only at the end)", opt::at_least(0))
        .field("on_bad_record", &PpoTaskOptions::on_bad_record, "skip or stop on a bad prompt line",
               opt::one_of({"skip", "stop"}))
        .field("device", &PpoTaskOptions::device, "cpu, cuda, cuda:N or auto")
        .field("frozen_dtype", &PpoTaskOptions::frozen_dtype,
               "dtype of the frozen reference and reward models (bfloat16 halves their memory)",
               opt::one_of({"float32", "bfloat16"}))
        .field("save_model", &PpoTaskOptions::save_model, "write the policy to <run>/policy")
        .section("aggregator", &PpoTaskOptions::aggregator, rlhf::aggregator_options_schema(),
                 "how the reward models' scores combine (min, argmin_group: MaxMin)")
        .section("ppo", &PpoTaskOptions::ppo, rlhf::ppo_options_schema(), "PPO")
        .section("grpo", &PpoTaskOptions::grpo, rlhf::grpo_options_schema(), "GRPO")
        .section("generation", &PpoTaskOptions::generation, lm::generation_options_schema(),
                 "rollout sampling (do_sample stays on)")
        .section("train", &PpoTaskOptions::train, train::trainer_options_schema(),
                 "the policy's optimiser (max_steps follows from the iterations)");
    return s;
  }();
  return schema;
}

// The position of a PPO run: iterations done and the KL coefficient; and the prompt sampler.
class PromptCursor final : public train::DataCursor {
 public:
  PromptCursor(int64_t prompts, int64_t batch, uint64_t seed)
      : sampler_(prompts, [&] {
          data::SamplerOptions o;
          o.batch_size = batch;
          o.seed = seed;
          o.drop_last = true;
          return o;
        }()) {}
  std::vector<int64_t> next() { return sampler_.next(); }
  int64_t batches_per_epoch() const override { return sampler_.batches_per_epoch(); }
  nlohmann::json state() const override {
    return {{"sampler", sampler_.state()}, {"iteration", iteration}, {"kl_coef", kl_coef},
            {"reward_mean", reward_mean}, {"reward_std", reward_std}};
  }
  void load_state(const nlohmann::json& s) override {
    sampler_.load_state(s.at("sampler"));
    iteration = s.at("iteration").get<int64_t>();
    kl_coef = s.at("kl_coef").get<double>();
    reward_mean = s.value("reward_mean", std::vector<double>{});
    reward_std = s.value("reward_std", std::vector<double>{});
  }
  int64_t iteration = 0;
  double kl_coef = 0;
  /// The reward normalisation calibrated in the first iteration (empty: none yet).
  std::vector<double> reward_mean, reward_std;

 private:
  data::BatchSampler sampler_;
};

void run_ppo(const Json& config, RunDirectory& dir, Report& report) {
  PpoTaskOptions o = ppo_task_schema().read(config);
  const c10::Device device = select_device(o.device);
  const std::string tokenizer_path = tokenizer_path_for(o.policy, o.tokenizer, "ppo");
  auto tokenizer = text::load_tokenizer(tokenizer_path);
  lm::CausalLM policy = load_model(o.policy, o.weights, device, "ppo");
  lm::CausalLM reference = load_model(o.policy, o.weights, device, "ppo");
  const at::ScalarType frozen = o.frozen_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  reference->to(frozen);
  lm::LoadOptions lo;
  lo.device = device;
  lo.dtype = frozen;
  rlhf::RewardSet rewards = fs::exists(fs::path(o.rewards) / "config.json")
                                ? rlhf::RewardSet::shared(rlhf::load_reward_model(o.rewards, lo))
                                : rlhf::RewardSet::load(o.rewards, lo);
  // Prompts, rendered by the chat template as the reward data was.
  data::JsonlOptions jo;
  jo.on_bad = data::bad_record_policy_from_string(o.on_bad_record);
  const auto tmpl = data::make_chat_template(o.chat_template);
  std::vector<std::vector<int64_t>> prompts;
  data::JsonlReader reader(o.prompts, jo);
  reader.for_each([&](const Json& object, const data::RecordLocation& loc) {
    auto it = object.find("prompt");
    if (it == object.end() || !it->is_string()) loc.fail("missing string key 'prompt'");
    if (it->get<std::string>().empty()) loc.fail("key 'prompt' is empty");
    const auto ids = tmpl->tokenize(*tokenizer, {{"user", it->get<std::string>()}}, true).ids;
    if (ids.empty()) loc.fail("the prompt renders to no tokens");
    prompts.emplace_back(ids.begin(), ids.end());
  });
  const data::BadRecords bad = reader.bad_records();
  if (bad.count > 0) spdlog::warn("ppo: {}", bad.summary(o.prompts));
  const bool grpo = o.algorithm == "grpo";
  const int64_t batch = grpo ? o.grpo.batch_size : o.ppo.batch_size;
  CONCORD_CHECK(static_cast<int64_t>(prompts.size()) >= batch, "ppo: '", o.prompts, "' gives ",
                prompts.size(), " usable prompts, fewer than one batch of ", batch);

  o.generation.do_sample = true;
  if (o.generation.stop_token_ids.empty() && tokenizer->eos_id()) {
    o.generation.stop_token_ids = {*tokenizer->eos_id()};
  }
  rlhf::RolloutOptions rollout;
  rollout.generation = o.generation;
  train::TrainerOptions t = o.train;
  const int64_t steps_per_iteration =
      grpo ? o.grpo.num_iterations *
                 ((o.grpo.batch_size * o.grpo.num_generations + o.grpo.mini_batch_size - 1) /
                  o.grpo.mini_batch_size)
           : o.ppo.ppo_epochs * (o.ppo.batch_size / o.ppo.mini_batch_size);
  t.max_steps = o.iterations * steps_per_iteration;
  t.progress = false;

  std::unique_ptr<rlhf::PpoTrainer> ppo;
  std::unique_ptr<rlhf::GrpoTrainer> grpo_trainer;
  rlhf::PolicyWithValue actor{nullptr};
  train::Trainer* trainer = nullptr;
  if (grpo) {
    grpo_trainer = std::make_unique<rlhf::GrpoTrainer>(policy, reference, rewards,
                                                       rlhf::make_aggregator(o.aggregator), o.grpo,
                                                       rollout, t);
    trainer = &grpo_trainer->trainer();
  } else {
    actor = rlhf::PolicyWithValue(policy);
    ppo = std::make_unique<rlhf::PpoTrainer>(actor, reference, rewards,
                                             rlhf::make_aggregator(o.aggregator), o.ppo, rollout, t);
    trainer = &ppo->trainer();
  }
  PromptCursor cursor(static_cast<int64_t>(prompts.size()), batch,
                      grpo ? o.grpo.seed : o.ppo.seed);
  cursor.kl_coef = o.ppo.init_kl_coef;
  if (dir.resuming()) {
    if (auto ckpt = train::latest_checkpoint(dir.file("checkpoints"))) {
      trainer->restore(*ckpt, cursor);
      dir.drop_metrics_after(cursor.iteration);
      rlhf::RolloutOptions restored = rollout;
      if (!cursor.reward_mean.empty()) {
        restored.reward_mean = at::tensor(cursor.reward_mean, at::kFloat);
        restored.reward_std = at::tensor(cursor.reward_std, at::kFloat);
      }
      if (ppo) {
        ppo->set_iteration(cursor.iteration);
        ppo->kl().set_value(cursor.kl_coef);
        ppo->set_rollout_options(restored);
      } else {
        grpo_trainer->set_iteration(cursor.iteration);
        grpo_trainer->set_rollout_options(restored);
      }
      spdlog::info("ppo: resuming at iteration {}", cursor.iteration);
    }
  }
  auto checkpoint = [&] {
    train::TrainingState state;
    state.step = trainer->step();
    state.data = cursor.state();
    trainer->save(dir.file("checkpoints"), state);
  };
  Json last;
  while (cursor.iteration < o.iterations) {
    std::vector<std::vector<int64_t>> batch_prompts;
    for (int64_t i : cursor.next()) batch_prompts.push_back(prompts[static_cast<size_t>(i)]);
    Json record;
    if (ppo) {
      const rlhf::PpoIteration it = ppo->step(batch_prompts);
      record = it.to_json();
      cursor.kl_coef = ppo->kl().value();
    } else {
      record = grpo_trainer->step(batch_prompts).to_json();
    }
    ++cursor.iteration;
    const rlhf::RolloutOptions& used = ppo ? ppo->rollout_options() : grpo_trainer->rollout_options();
    if (used.reward_mean.defined() && cursor.reward_mean.empty()) {
      for (int64_t k = 0; k < used.reward_mean.size(0); ++k) {
        cursor.reward_mean.push_back(used.reward_mean[k].item<double>());
        cursor.reward_std.push_back(used.reward_std[k].item<double>());
      }
    }
    record["step"] = cursor.iteration;
    dir.metrics().log_json(record);
    last = record;
    const std::string score_key = ppo ? "objective/scores" : "reward";
    spdlog::info("{} iteration {}/{}: score {:.4f}", o.algorithm, cursor.iteration, o.iterations,
                 record.value(score_key, 0.0));
    if (o.checkpoint_every > 0 && cursor.iteration % o.checkpoint_every == 0) checkpoint();
  }
  checkpoint();
  if (o.save_model) save_policy(policy, tokenizer_path, dir.file("policy"));

  std::vector<std::string> groups;
  for (int64_t k = 0; k < rewards.size(); ++k) groups.push_back("reward/group_" + std::to_string(k));
  const bool group_chart = chart_metrics_together(dir, "group_rewards.png",
                                                  "mean reward of each reward model", "iteration",
                                                  "reward", groups);
  const bool objective_chart =
      ppo ? chart_metrics_together(dir, "objective.png", "PPO objective", "iteration", "",
                                   {"objective/scores", "objective/rlhf_reward", "objective/kl"})
          : chart_metrics_together(dir, "objective.png", "GRPO", "iteration", "",
                                   {"reward", "reward_std", "kl"});
  std::vector<std::vector<std::string>> rows;
  for (const auto& [k, v] : last.items()) {
    if (v.is_number()) rows.push_back({k, fixed(v.get<double>(), 4)});
  }
  report.heading("Setup").table(
      {"", ""},
      {{"algorithm", o.algorithm},
       {"aggregator", o.aggregator.name},
       {"reward models", std::to_string(rewards.size())},
       {"prompts", std::to_string(prompts.size()) +
                       (bad.count > 0 ? " (" + std::to_string(bad.count) + " bad lines skipped)" : "")},
       {"iterations", std::to_string(o.iterations)}});
  report.heading("Last iteration").table({"metric", "value"}, rows);
  if (objective_chart) report.image("objective", "charts/objective.png");
  if (group_chart) report.image("group rewards", "charts/group_rewards.png");
  if (o.save_model) report.paragraph("The policy is in [policy/](policy).");
}

// ---- dpo ------------------------------------------------------------------------------------

struct DpoTaskOptions {
  std::string policy;
  std::string reference;
  std::string tokenizer;
  std::string data;
  std::string chat_template = "plain";
  int64_t max_length = 512;
  std::string on_bad_record = "skip";
  int64_t batch_size = 8;
  std::string groups = "none";
  std::string device = "cpu";
  std::string frozen_dtype = "float32";
  bool save_model = true;
  rlhf::DpoOptions dpo;
  train::TrainerOptions train = [] {
    train::TrainerOptions t;
    t.optimizer.lr = 1e-6;  // TRL's DPOConfig
    t.optimizer.weight_decay = 0.0;
    t.lr_schedule = "linear";
    return t;
  }();
};

const OptionsSchema<DpoTaskOptions>& dpo_task_schema() {
  static const OptionsSchema<DpoTaskOptions> schema = [] {
    OptionsSchema<DpoTaskOptions> s("dpo task");
    s.field("policy", &DpoTaskOptions::policy, "the causal LM folder to train", opt::required())
        .field("reference", &DpoTaskOptions::reference,
               "the frozen reference (default: the policy's starting weights)")
        .field("tokenizer", &DpoTaskOptions::tokenizer, "default: the policy folder")
        .field("data", &DpoTaskOptions::data, "preference JSONL", opt::required())
        .field("chat_template", &DpoTaskOptions::chat_template, "as SFT")
        .field("max_length", &DpoTaskOptions::max_length, "tokens per sequence at most",
               opt::at_least(2))
        .field("on_bad_record", &DpoTaskOptions::on_bad_record, "skip or stop",
               opt::one_of({"skip", "stop"}))
        .field("batch_size", &DpoTaskOptions::batch_size, "pairs per micro-batch", opt::at_least(1))
        .field("groups", &DpoTaskOptions::groups,
               "group-robust DPO's groups: none, planted (the data's \"group\"), or a reward_em "
               "run's em.json (its clusters)")
        .field("device", &DpoTaskOptions::device, "cpu, cuda, cuda:N or auto")
        .field("frozen_dtype", &DpoTaskOptions::frozen_dtype,
               "dtype of the frozen reference (bfloat16 halves its memory)",
               opt::one_of({"float32", "bfloat16"}))
        .field("save_model", &DpoTaskOptions::save_model, "write the policy to <run>/policy")
        .section("dpo", &DpoTaskOptions::dpo, rlhf::dpo_options_schema(), "DPO")
        .section("train", &DpoTaskOptions::train, train::trainer_options_schema(), "optimisation");
    return s;
  }();
  return schema;
}

// Group of every user: planted groups of the data, or the clusters of an em.json.
at::Tensor user_groups(const DpoTaskOptions& o, const data::PreferenceDataset& d) {
  std::vector<int64_t> g(static_cast<size_t>(d.users().size()), 0);
  if (o.groups == "planted") {
    CONCORD_CHECK(d.groups().size() > 0, "dpo: groups 'planted' but '", o.data,
                  "' has no \"group\" keys");
    for (const auto& p : d.pairs()) g[static_cast<size_t>(p.user_index)] = std::max<int64_t>(0, p.group_index);
  } else {
    const Json em = load_json_file(o.groups);
    if (!em.contains("assignment") || !em["assignment"].is_object()) {
      fail_format(o.groups, "no 'assignment' object (a reward_em run's em.json)");
    }
    for (int64_t u = 0; u < d.users().size(); ++u) {
      const auto& name = d.users().names()[static_cast<size_t>(u)];
      auto it = em["assignment"].find(name);
      if (it == em["assignment"].end() || !it->is_number_integer()) {
        fail_format(o.groups, "user '", name, "' of ", o.data, " has no cluster");
      }
      g[static_cast<size_t>(u)] = std::max<int64_t>(0, it->get<int64_t>());
    }
  }
  return at::tensor(g, at::kLong);
}

void run_dpo(const Json& config, RunDirectory& dir, Report& report) {
  DpoTaskOptions o = dpo_task_schema().read(config);
  const c10::Device device = select_device(o.device);
  const std::string tokenizer_path = tokenizer_path_for(o.policy, o.tokenizer, "dpo");
  auto tokenizer = text::load_tokenizer(tokenizer_path);
  lm::CausalLM policy = load_model(o.policy, "", device, "dpo");
  lm::CausalLM reference = load_model(o.reference.empty() ? o.policy : o.reference, "", device, "dpo");
  if (o.frozen_dtype == "bfloat16") reference->to(at::kBFloat16);
  policy->train();
  data::PreferenceOptions po;
  po.chat_template = o.chat_template;
  po.max_length = o.max_length;
  data::JsonlOptions jo;
  jo.on_bad = data::bad_record_policy_from_string(o.on_bad_record);
  const auto d = data::PreferenceDataset::from_jsonl(o.data, *tokenizer, po, jo);
  CONCORD_CHECK(d.size() > 0, "dpo: no usable pairs in '", o.data, "'");
  if (o.groups != "none") o.dpo.group_robust = true;
  rlhf::DpoObjective objective(policy, reference, o.dpo);
  if (o.dpo.group_robust) {
    CONCORD_CHECK(o.groups != "none", "dpo: dpo.group_robust needs 'groups' (planted or an em.json)");
    objective.set_user_groups(user_groups(o, d));
  }
  data::SamplerOptions sampling;
  sampling.batch_size = o.batch_size;
  sampling.seed = config["seed"].get<uint64_t>();
  train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> batches(d, sampling.for_this_process());
  train::Trainer trainer({{"policy", policy.ptr()}}, o.train);
  if (o.dpo.group_robust) trainer.set_step_hook([&](int64_t) { objective.update_group_weights(); });
  if (dir.resuming()) {
    if (auto ckpt = train::latest_checkpoint(dir.file("checkpoints"))) {
      trainer.restore(*ckpt, batches);
      dir.drop_metrics_after(trainer.step());
    }
  }
  const auto result = trainer.fit(objective, batches, nullptr, &dir);
  if (o.save_model) save_policy(policy, tokenizer_path, dir.file("policy"));
  const bool reward_chart = chart_metrics_together(
      dir, "rewards.png", "DPO implicit rewards", "step", "beta log-ratio",
      {"train/rewards/chosen", "train/rewards/rejected", "train/rewards/margins"});
  std::vector<std::vector<std::string>> rows = {
      {"pairs", std::to_string(d.size())},
      {"bad records", std::to_string(d.stats().bad.count)},
      {"steps", std::to_string(result.steps)},
      {"final loss", fixed(result.final_loss, 4)},
      {"beta", fixed(o.dpo.beta, 3)}};
  if (o.dpo.group_robust) {
    const at::Tensor alpha = objective.group_weights();
    for (int64_t g = 0; g < alpha.size(0); ++g) {
      rows.push_back({"group weight alpha_" + std::to_string(g), fixed(alpha[g].item<double>(), 4)});
    }
  }
  report.heading("DPO" + std::string(o.dpo.group_robust ? " (group-robust)" : ""))
      .paragraph("Loss per pair: -log sigmoid(beta ((log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) "
                 "- log pi_ref(y_r)))) (Rafailov et al. 2023, Eq. 7)" +
                 std::string(o.dpo.group_robust
                                 ? "; group-robust: sum_g alpha_g L_g with alpha updated by "
                                   "exponentiated gradient (Ramesh et al. 2024)."
                                 : "."))
      .table({"", ""}, rows);
  if (reward_chart) report.image("implicit rewards", "charts/rewards.png");
}

}  // namespace

Task ppo_task() {
  Task t;
  t.summary = "PPO or GRPO against frozen reward models; aggregator min / argmin_group is MaxMin-RLHF";
  t.schema = [] { return ppo_task_schema().config_schema(); };
  t.run = run_ppo;
  return t;
}

Task dpo_task() {
  Task t;
  t.summary = "DPO on preference pairs, optionally group-robust over planted or EM groups";
  t.schema = [] { return dpo_task_schema().config_schema(); };
  t.run = run_dpo;
  return t;
}

}  // namespace concord::tasks
