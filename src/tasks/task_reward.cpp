#include "task_reward.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <limits>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/runtime.h"
#include "concord/core/shard.h"
#include "concord/core/stop_signal.h"
#include "concord/data/jsonl.h"
#include "concord/data/preference.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/em.h"
#include "concord/rlhf/reward_model.h"
#include "concord/rlhf/shared_prefix.h"
#include "concord/text/tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/checkpoint.h"
#include "concord/train/trainer.h"
#include "concord/tasks/model_loading.h"
#include "metric_chart.h"
#include "reward_em_checkpoint.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

// Keys both reward tasks share.
struct PreferenceInput {
  std::string model;       // reward model folder, or a causal LM folder (fresh heads)
  std::string tokenizer;
  std::string data;
  std::string chat_template = "plain";
  int64_t max_length = 512;
  std::string truncation = "skip";
  std::string on_bad_record = "skip";
  int64_t batch_size = 8;
  std::string device = "cpu";
};

template <typename T>
void declare_input(OptionsSchema<T>& s, PreferenceInput T::*input) {
  s.field("model", input, &PreferenceInput::model,
          "a reward model folder (transformers ...ForSequenceClassification) or a causal LM folder "
          "(the backbone of new reward heads)",
          opt::required())
      .field("tokenizer", input, &PreferenceInput::tokenizer,
             "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
      .field("data", input, &PreferenceInput::data,
             "preference JSONL: {\"prompt\",\"chosen\",\"rejected\",\"user\"[,\"margin\",\"group\"]}",
             opt::required())
      .field("chat_template", input, &PreferenceInput::chat_template,
             "how prompt and response are joined (as SFT)")
      .field("max_length", input, &PreferenceInput::max_length, "tokens per sequence at most",
             opt::at_least(2))
      .field("truncation", input, &PreferenceInput::truncation,
             "skip: drop a too-long pair; truncate: cut its responses", opt::one_of({"skip", "truncate"}))
      .field("on_bad_record", input, &PreferenceInput::on_bad_record,
             "skip: count and report bad lines (file:line); stop: fail on the first",
             opt::one_of({"skip", "stop"}))
      .field("batch_size", input, &PreferenceInput::batch_size, "pairs per micro-batch",
             opt::at_least(1))
      .field("device", input, &PreferenceInput::device, "cpu, cuda, cuda:N or auto");
}

struct LoadedPreferences {
  std::unique_ptr<text::Tokenizer> tokenizer;
  data::PreferenceDataset data;
};

// `require_user`: records without a "user" key are bad records (reward_em's mixture is over
// users; `reward` pools every pair).
data::PreferenceOptions preference_options(const PreferenceInput& in, bool require_user) {
  data::PreferenceOptions po;
  po.require_user = require_user;
  po.chat_template = in.chat_template;
  po.max_length = in.max_length;
  po.truncation = data::truncation_policy_from_string(in.truncation);
  return po;
}

data::JsonlOptions jsonl_options(const PreferenceInput& in) {
  data::JsonlOptions jo;
  jo.on_bad = data::bad_record_policy_from_string(in.on_bad_record);
  return jo;
}

// Held-out pairs from a second file, numbered by the users of `train` (add_users false: a pair
// of a user the training file never named is a bad record).
data::PreferenceDataset heldout_preferences(const PreferenceInput& in, const std::string& file,
                                            const text::Tokenizer& tokenizer,
                                            const data::PreferenceDataset& train, bool add_users) {
  return data::PreferenceDataset::from_jsonl(file, tokenizer,
                                             preference_options(in, /*require_user=*/!add_users),
                                             jsonl_options(in), &train.users(), add_users);
}

LoadedPreferences load_preferences(const PreferenceInput& in, const std::string& task) {
  LoadedPreferences out;
  out.tokenizer = text::load_tokenizer(tokenizer_path_for(in.model, in.tokenizer, task));
  out.data = data::PreferenceDataset::from_jsonl(
      in.data, *out.tokenizer, preference_options(in, task == "reward_em"), jsonl_options(in));
  const auto& st = out.data.stats();
  if (st.bad.count > 0) spdlog::warn("{}: {}", task, st.bad.summary(in.data));
  CONCORD_CHECK(out.data.size() > 0, task, ": no usable preference pairs in '", in.data, "' (",
                st.records, " records, ", st.skipped_too_long, " too long, ", st.bad.count,
                " bad)");
  return out;
}

void report_data(Report& report, const PreferenceInput& in, const data::PreferenceDataset& d) {
  const auto& st = d.stats();
  std::vector<std::vector<std::string>> rows = {
      {"file", "`" + in.data + "`"},
      {"pairs", std::to_string(d.size())},
      {"users", std::to_string(d.users().size())},
      {"skipped (too long)", std::to_string(st.skipped_too_long)},
      {"truncated", std::to_string(st.truncated)},
      {"bad records", std::to_string(st.bad.count)}};
  report.heading("Data").table({"", ""}, rows);
  if (st.bad.count > 0) {
    std::string list;
    for (const auto& e : st.bad.examples) list += "- " + e + "\n";
    report.paragraph(st.bad.summary(in.data) + ":").raw(list);
  }
}

void copy_tokenizer(const std::string& tokenizer_path, const fs::path& out) {
  if (fs::is_regular_file(tokenizer_path)) {
    write_file_atomic(out / fs::path(tokenizer_path).filename(), read_file(tokenizer_path));
  } else if (fs::is_regular_file(fs::path(tokenizer_path) / "tokenizer.json")) {
    write_file_atomic(out / "tokenizer.json", read_file(fs::path(tokenizer_path) / "tokenizer.json"));
  }
}


// ---- reward ---------------------------------------------------------------------------------

struct RewardTaskOptions {
  PreferenceInput input;
  std::string eval_data;
  double eval_fraction = 0.05;
  int64_t heads = 1;
  double center_rewards_coefficient = 0.0;
  bool share_prefixes = true;
  bool save_model = true;
  train::TrainerOptions train;
};

const OptionsSchema<RewardTaskOptions>& reward_options_schema() {
  static const OptionsSchema<RewardTaskOptions> schema = [] {
    OptionsSchema<RewardTaskOptions> s("reward task");
    declare_input(s, &RewardTaskOptions::input);
    s.field("eval_data", &RewardTaskOptions::eval_data,
            "held-out preference JSONL (empty: the last eval_fraction of the pairs)")
        .field("eval_fraction", &RewardTaskOptions::eval_fraction,
               "share of the pairs held out when there is no eval_data", opt::at_least(0),
               opt::less_than(1))
        .field("heads", &RewardTaskOptions::heads,
               "reward heads of a new model (a causal LM folder); a reward model keeps its own",
               opt::at_least(1))
        .field("center_rewards_coefficient", &RewardTaskOptions::center_rewards_coefficient,
               "TRL's reward centering (0: off; 0.01 recommended)", opt::at_least(0))
        .field("share_prefixes", &RewardTaskOptions::share_prefixes,
               "run each pair's common prefix (the prompt) once for both rows when that saves "
               "at least " + rlhf::min_shared_fraction_text() +
                   " of the token slots (the rewards are the full rows', to rounding)")
        .field("save_model", &RewardTaskOptions::save_model,
               "write the trained model to <run>/reward as a transformers folder")
        .section("train", &RewardTaskOptions::train, train::trainer_options_schema(),
                 "optimisation");
    return s;
  }();
  return schema;
}

void run_reward(const Json& config, RunDirectory& dir, Report& report) {
  const RewardTaskOptions o = reward_options_schema().read(config);
  auto loaded = load_preferences(o.input, "reward");
  const data::PreferenceDataset& all = loaded.data;
  // Held-out pairs: a file of the same users, else the tail of this one.
  data::PreferenceDataset eval_set;
  data::PreferenceDataset train_set;
  if (!o.eval_data.empty()) {
    train_set = all;
    eval_set = heldout_preferences(o.input, o.eval_data, *loaded.tokenizer, all, /*add_users=*/true);
  } else {
    const auto n_eval = static_cast<int64_t>(o.eval_fraction * static_cast<double>(all.size()));
    std::vector<data::PreferencePair> head(all.pairs().begin(), all.pairs().end() - n_eval);
    std::vector<data::PreferencePair> tail(all.pairs().end() - n_eval, all.pairs().end());
    train_set = data::PreferenceDataset::from_pairs(head, all.users(), all.groups(), all.pad_id());
    eval_set = data::PreferenceDataset::from_pairs(tail, all.users(), all.groups(), all.pad_id());
  }
  CONCORD_CHECK(train_set.size() > 0, "reward: no training pairs left after holding out ",
                eval_set.size());
  lm::LoadOptions lo;
  lo.device = select_device(o.input.device);
  rlhf::RewardModel model = rlhf::load_reward_model(o.input.model, lo, o.heads);
  model->train();
  auto rewards = rlhf::RewardSet::shared(model);
  rlhf::BradleyTerryObjective objective(rewards,
                                       {o.center_rewards_coefficient, true, o.share_prefixes});

  data::SamplerOptions sampling;
  sampling.batch_size = o.input.batch_size;
  sampling.seed = config["seed"].get<uint64_t>();
  train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> train_batches(train_set, sampling.for_this_process());
  data::SamplerOptions in_order = sampling;
  in_order.shuffle = false;
  std::unique_ptr<train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch>> eval_batches;
  if (eval_set.size() > 0) {
    eval_batches = std::make_unique<train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch>>(
        eval_set, in_order);
  }
  train::Trainer trainer(rewards.named_modules(), o.train);
  if (dir.resuming()) {
    if (auto ckpt = train::latest_checkpoint(dir.file("checkpoints"))) {
      trainer.restore(*ckpt, train_batches);
      dir.drop_metrics_after(trainer.step());
    }
  }
  const auto result = trainer.fit(objective, train_batches, eval_batches.get(), &dir);
  model->eval();
  if (o.save_model) {
    rlhf::save_reward_model(model, dir.file("reward"));
    copy_tokenizer(tokenizer_path_for(o.input.model, o.input.tokenizer, "reward"), dir.file("reward"));
  }
  report_data(report, o.input, all);
  std::vector<std::vector<std::string>> rows = {
      {"parameters", std::to_string(model->num_parameters())},
      {"heads", std::to_string(model->num_heads())},
      {"steps", std::to_string(result.steps)},
      {"final training loss", fixed(result.final_loss, 4)}};
  if (eval_batches) {
    const auto eval = trainer.evaluate(objective, *eval_batches);
    rows.push_back({"held-out pairs", std::to_string(eval_set.size())});
    rows.push_back({"held-out loss", fixed(eval.loss, 4)});
    rows.push_back({"held-out accuracy", fixed(eval.metrics.at("accuracy").value(), 4)});
    rows.push_back({"held-out margin", fixed(eval.metrics.at("margin").value(), 4)});
  }
  report.heading("Training")
      .paragraph("Loss per pair: -log sigmoid(r(x, y_c) - r(x, y_r) - margin) (the Bradley-Terry model; "
                 "TRL's RewardTrainer), read at the last real token of each sequence.")
      .table({"", ""}, rows);
  if (chart_metrics_together(dir, "loss.png", "Bradley-Terry loss", "step", "loss",
                             {"train/loss", "eval/loss"})) {
    report.image("loss", "charts/loss.png");
  }
  if (chart_metrics_together(dir, "accuracy.png", "ranking accuracy", "step", "accuracy",
                             {"train/accuracy", "eval/accuracy"})) {
    report.image("accuracy", "charts/accuracy.png");
  }
  if (o.save_model) {
    report.paragraph("The model is in [reward/](reward), in transformers' "
                     "ForSequenceClassification format.");
  }
}

// ---- reward_em ------------------------------------------------------------------------------

struct RewardEmTaskOptions {
  PreferenceInput input;
  std::string heldout;
  double holdout_fraction = 0.2;
  std::vector<int64_t> select_clusters;
  std::string layout = "separate";
  rlhf::EmOptions em;
  bool save_model = true;
  train::TrainerOptions train;
};

const OptionsSchema<RewardEmTaskOptions>& reward_em_options_schema() {
  static const OptionsSchema<RewardEmTaskOptions> schema = [] {
    OptionsSchema<RewardEmTaskOptions> s("reward_em task");
    declare_input(s, &RewardEmTaskOptions::input);
    s.field("heldout", &RewardEmTaskOptions::heldout,
            "held-out pairs of the same users (empty: the last holdout_fraction of each user's "
            "pairs)")
        .field("holdout_fraction", &RewardEmTaskOptions::holdout_fraction,
               "share of each user's pairs held out", opt::at_least(0), opt::less_than(1))
        .field("select_clusters", &RewardEmTaskOptions::select_clusters,
               "candidate K: each is fitted and the best held-out likelihood per pair is kept "
               "(empty: em.clusters only)",
               opt::at_least(1))
        .field("layout", &RewardEmTaskOptions::layout,
               "separate: K reward models (the paper); shared: one backbone, K heads",
               opt::one_of({"separate", "shared"}))
        .section("em", &RewardEmTaskOptions::em, rlhf::em_options_schema(), "EM")
        .field("save_model", &RewardEmTaskOptions::save_model,
               "write the reward models to <run>/rewards as transformers folders")
        .section("train", &RewardEmTaskOptions::train, train::trainer_options_schema(),
                 "each M-step's optimisation (max_steps is em.m_step_steps)");
    return s;
  }();
  return schema;
}

rlhf::RewardSet fresh_mixture(const RewardEmTaskOptions& o, int64_t k, c10::Device device) {
  lm::LoadOptions lo;
  lo.device = device;
  // Seeded, so that a resumed run rebuilds the initial weights every restart starts from.
  if (o.layout == "shared") {
    torch::manual_seed(static_cast<uint64_t>(o.em.seed));
    return rlhf::RewardSet::shared(rlhf::load_reward_model(o.input.model, lo, k));
  }
  std::vector<rlhf::RewardModel> models;
  for (int64_t i = 0; i < k; ++i) {
    torch::manual_seed(static_cast<uint64_t>(o.em.seed) + static_cast<uint64_t>(i));
    rlhf::RewardModel m = rlhf::load_reward_model(o.input.model, lo, 1);
    CONCORD_CHECK(m->num_heads() == 1, "reward_em: layout separate needs one-head reward models; '",
                  o.input.model, "' has ", m->num_heads());
    models.push_back(m);
  }
  return rlhf::RewardSet::separate(std::move(models));
}

// Each user's last `fraction` of pairs (at least one when the user has two) is held out.
std::pair<data::PreferenceDataset, data::PreferenceDataset> split_by_user(
    const data::PreferenceDataset& all, double fraction) {
  std::vector<int64_t> count(static_cast<size_t>(all.users().size()), 0), seen = count;
  for (const auto& p : all.pairs()) ++count[static_cast<size_t>(p.user_index)];
  std::vector<data::PreferencePair> train, held;
  for (const auto& p : all.pairs()) {
    const auto u = static_cast<size_t>(p.user_index);
    const auto keep = count[u] - static_cast<int64_t>(fraction * static_cast<double>(count[u]));
    (seen[u]++ < keep ? train : held).push_back(p);
  }
  return {data::PreferenceDataset::from_pairs(train, all.users(), all.groups(), all.pad_id()),
          data::PreferenceDataset::from_pairs(held, all.users(), all.groups(), all.pad_id())};
}

void run_reward_em(const Json& config, RunDirectory& dir, Report& report) {
  RewardEmTaskOptions o = reward_em_options_schema().read(config);
  auto loaded = load_preferences(o.input, "reward_em");
  const data::PreferenceDataset& all = loaded.data;
  const c10::Device device = select_device(o.input.device);
  data::PreferenceDataset train_set, held;
  if (!o.heldout.empty()) {
    train_set = all;
    held = heldout_preferences(o.input, o.heldout, *loaded.tokenizer, all, /*add_users=*/false);
  } else {
    std::tie(train_set, held) = split_by_user(all, o.holdout_fraction);
  }
  std::vector<int64_t> candidates = o.select_clusters;
  if (candidates.empty()) candidates.push_back(o.em.clusters);
  train::TrainerOptions t = o.train;
  t.progress = false;
  const fs::path checkpoints = dir.file("checkpoints");
  const bool writes_checkpoints = process_shard().rank == 0;

  // Where the choice of K stands; a resumed run reads it, with the weights, from the newest
  // checkpoint (one is written after every EM iteration: a kill loses one M-step at most).
  RewardEmProgress progress;
  std::optional<fs::path> resume_from;
  if (dir.resuming()) resume_from = train::latest_checkpoint(checkpoints);
  std::optional<rlhf::RewardSet> best_set;
  if (resume_from) {
    progress = read_reward_em_progress(*resume_from);
    const auto mismatch = [&](const std::string& what) {
      fail_config(resume_from->string(), what, "; resume with the options of the run");
    };
    if (progress.candidate >= static_cast<int64_t>(candidates.size()) || progress.em.is_null() ||
        progress.selection.size() != static_cast<size_t>(progress.candidate)) {
      mismatch("the checkpoint is at K candidate " + std::to_string(progress.candidate) + " of " +
               std::to_string(candidates.size()));
    }
    for (int64_t i = 0; i < progress.candidate; ++i) {
      if (progress.selection[static_cast<size_t>(i)].value("clusters", int64_t{0}) != candidates[static_cast<size_t>(i)]) {
        mismatch("its K candidates differ from select_clusters");
      }
    }
    if (progress.best_k > 0) best_set = fresh_mixture(o, progress.best_k, device);
    dir.drop_metrics_after(progress.step);
    spdlog::info("reward_em: resuming from {} (EM iteration {})", resume_from->string(), progress.step);
  }

  for (; progress.candidate < static_cast<int64_t>(candidates.size()); ++progress.candidate) {
    const int64_t k = candidates[static_cast<size_t>(progress.candidate)];
    rlhf::EmOptions em_options = o.em;
    em_options.clusters = k;
    rlhf::RewardSet rewards = fresh_mixture(o, k, device);
    rlhf::RewardMixtureEm em(rewards, train_set, em_options, t);
    const auto weights = [&]() -> RewardEmWeights {
      return {&rewards, em.best_restart_weights(), best_set ? &*best_set : nullptr};
    };
    if (resume_from) {
      try {
        em.restore(progress.em);
      } catch (const FormatError& e) {
        fail_config(resume_from->string(), e.what());
      }
      load_reward_em_weights(*resume_from, weights());
      resume_from.reset();
    }
    spdlog::info("reward_em: K = {}", k);
    std::optional<fs::path> last;
    try {
      while (!em.done()) {
        const rlhf::EmIteration& it = em.iterate();
        Json record = it.to_json();
        record["step"] = ++progress.step;
        record["clusters"] = k;
        dir.metrics().log_json(record);
        spdlog::info("reward_em: K {} restart {} iteration {}: log-likelihood/pair {:.4f}, {} moved",
                     k, it.restart, it.iteration, it.log_likelihood_per_pair, it.changed);
        progress.em = em.state();
        if (writes_checkpoints) {
          last = save_reward_em_checkpoint(checkpoints, progress, weights(), t.keep_checkpoints);
        }
      }
    } catch (const Stopped& stop) {
      throw Stopped("reward_em: stopped by " + signal_name(stop.signal()) + " in EM iteration " +
                        std::to_string(progress.step + 1) + "'s M-step" +
                        (last ? "; checkpoint " + last->string() + " of iteration " +
                                    std::to_string(progress.step) + " (continue with --resume)"
                              : ""),
                    stop.signal());
    }
    // This K is finished (a checkpoint of its last iteration resumes here): score it.
    const rlhf::EmResult fit = em.finish();
    const rlhf::HeldOutFit h = rlhf::evaluate_mixture(rewards, held, fit, em_options.score_batch_size);
    progress.selection.push_back({{"clusters", k},
                                  {"train_log_likelihood_per_pair", fit.log_likelihood_per_pair},
                                  {"heldout", h.to_json()}});
    progress.k_rows.push_back({std::to_string(k), fixed(fit.log_likelihood_per_pair, 4),
                               h.pairs > 0 ? fixed(h.log_likelihood_per_pair, 4) : "-",
                               h.pairs > 0 ? fixed(h.accuracy, 4) : "-"});
    const double score = h.pairs > 0 ? h.log_likelihood_per_pair : fit.log_likelihood_per_pair;
    if (score > progress.best_score) {
      progress.best_score = score;
      progress.best_k = k;
      progress.best_fit = fit;
      best_set = rewards;
    }
    progress.em = nullptr;
  }
  const rlhf::EmResult& best_fit = *progress.best_fit;
  Json em_json = best_fit.to_json(all.users());
  em_json["selection"] = progress.selection;
  write_file_atomic(dir.file("em.json"), em_json.dump(2) + "\n");
  if (o.save_model) {
    best_set->save(dir.file("rewards"));
    const std::string tok = tokenizer_path_for(o.input.model, o.input.tokenizer, "reward_em");
    for (const auto& [name, m] : best_set->named_modules()) copy_tokenizer(tok, dir.file("rewards") / name);
  }

  report_data(report, o.input, all);
  const bool ll_chart = chart_metrics_together(dir, "log_likelihood.png", "EM log-likelihood per pair",
                                               "EM iteration (all K and restarts)", "nats per pair",
                                               {"log_likelihood_per_pair"});
  report.heading("Choice of K")
      .paragraph("Each K is fitted on the training pairs; the held-out pairs of the same users "
                 "are scored under their user's cluster (soft: the user's responsibilities). "
                 "The K with the best held-out log-likelihood per pair is kept.")
      .table({"K", "train log-lik/pair", "held-out log-lik/pair", "held-out accuracy"}, progress.k_rows);
  std::vector<std::vector<std::string>> cluster_rows;
  for (int64_t c = 0; c < best_fit.clusters; ++c) {
    int64_t users = 0;
    for (int64_t a : best_fit.assignment) users += a == c ? 1 : 0;
    cluster_rows.push_back({std::to_string(c), std::to_string(users),
                            std::to_string(best_fit.cluster_pairs[static_cast<size_t>(c)]),
                            fixed(best_fit.mixture_weights[static_cast<size_t>(c)], 3),
                            fixed(best_fit.cluster_accuracy[static_cast<size_t>(c)], 4)});
  }
  report.heading("Clusters (K = " + std::to_string(best_fit.clusters) + ")")
      .paragraph("E-step " + o.em.assignment + " (argmax_k sum over a user's pairs of log "
                 "sigmoid(r_k(y_c) - r_k(y_r)), MaxMin-RLHF's EM), init " + o.em.init + ", " +
                 std::to_string(o.em.restarts) + " restart(s), best restart " +
                 std::to_string(best_fit.best_restart) + ".")
      .table({"cluster", "users", "pairs", "weight", "accuracy of its reward model"}, cluster_rows);
  if (ll_chart) report.image("log-likelihood per pair", "charts/log_likelihood.png");
  if (best_fit.purity) {
    report.paragraph("Against the planted groups of the data: purity " + fixed(*best_fit.purity, 4) +
                     ", NMI " + fixed(*best_fit.nmi, 4) + ".");
  }
  if (!best_fit.users_without_pairs.empty()) {
    // Users whose every pair was skipped (too long, or bad records: the data section counts
    // them with their lines), named; em.json lists their indices.
    std::string names;
    const size_t shown = std::min<size_t>(10, best_fit.users_without_pairs.size());
    for (size_t i = 0; i < shown; ++i) {
      names += (i ? ", '" : "'") + all.users().names()[best_fit.users_without_pairs[i]] + "'";
    }
    if (shown < best_fit.users_without_pairs.size()) names += ", ...";
    report.paragraph(std::to_string(best_fit.users_without_pairs.size()) +
                     " user(s) have no usable pair and no cluster: " + names +
                     " (every pair of theirs was skipped; see the data section and em.json).");
  }
  report.paragraph("Assignments, per-iteration likelihoods and the K selection: [em.json](em.json)" +
                   std::string(o.save_model ? "; reward models in [rewards/](rewards)." : "."));
}

}  // namespace

Task reward_task() {
  Task t;
  t.summary = "Bradley-Terry reward model on preference pairs (transformers ForSequenceClassification in and out)";
  t.schema = [] { return reward_options_schema().config_schema(); };
  t.run = run_reward;
  return t;
}

Task reward_em_task() {
  Task t;
  t.summary = "EM-learned mixture of reward models over users (MaxMin-RLHF), with the choice of K";
  t.schema = [] { return reward_em_options_schema().config_schema(); };
  t.run = run_reward_em;
  return t;
}

}  // namespace concord::tasks
