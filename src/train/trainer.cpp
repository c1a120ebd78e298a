#include "concord/train/trainer.h"

#include <c10/core/InferenceMode.h>
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include <spdlog/spdlog.h>

#include "concord/core/error.h"
#include "concord/core/options.h"
#include "concord/core/progress.h"
#include "concord/core/stop_signal.h"
#include "concord/train/autocast.h"
#include "concord/train/checkpoint.h"
#include "concord/train/optimizer_shards.h"

namespace concord::train {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// The autocast a loss runs under: bf16 for CUDA tensors, and for CPU tensors with autocast_cpu.
struct LossAutocast {
  explicit LossAutocast(const TrainerOptions& o)
      : cuda(o.precision == "bf16", at::kBFloat16, AutocastDevice::cuda),
        cpu(o.precision == "bf16" && o.autocast_cpu, at::kBFloat16, AutocastDevice::cpu) {}
  AutocastGuard cuda, cpu;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options

LrScheduleOptions TrainerOptions::schedule() const {
  LrScheduleOptions s;
  s.name = lr_schedule;
  s.peak_lr = optimizer.lr;
  s.warmup_steps = warmup_steps;
  s.total_steps = max_steps;
  s.min_lr_ratio = min_lr_ratio;
  return s;
}

void TrainerOptions::validate() const {
  // Each key's own rule comes from the declaration (trainer_options_schema); what spans keys
  // is checked here.
  trainer_options_schema().validate(*this, "train");
  CONCORD_CHECK(!autocast_cpu || precision == "bf16",
                "train.autocast_cpu needs train.precision bf16");
  optimizer.validate();
  schedule().validate();
}

const OptionsSchema<TrainerOptions>& trainer_options_schema() {
  static const OptionsSchema<TrainerOptions> schema = [] {
    using T = TrainerOptions;
    using A = AdamWOptions;
    OptionsSchema<T> s("optimisation");
    s.field("max_steps", &T::max_steps, "optimizer steps", opt::greater_than(0))
        .field("grad_accum_steps", &T::grad_accum_steps, "micro-batches per optimizer step",
               opt::greater_than(0))
        .field("max_grad_norm", &T::max_grad_norm, "global gradient-norm clipping (0: off)",
               opt::at_least(0))
        .field("lr", &T::optimizer, &A::lr, "peak learning rate", opt::at_least(0))
        .field("beta1", &T::optimizer, &A::beta1, "AdamW beta1", opt::at_least(0), opt::less_than(1))
        .field("beta2", &T::optimizer, &A::beta2, "AdamW beta2", opt::at_least(0), opt::less_than(1))
        .field("eps", &T::optimizer, &A::eps, "AdamW epsilon", opt::greater_than(0))
        .field("weight_decay", &T::optimizer, &A::weight_decay,
               "decoupled weight decay on weight matrices", opt::at_least(0))
        .field("lr_schedule", &T::lr_schedule, "decay after warm-up",
               opt::one_of({"cosine", "linear", "constant"}))
        .field("warmup_steps", &T::warmup_steps, "linear warm-up steps", opt::at_least(0))
        .field("min_lr_ratio", &T::min_lr_ratio, "final learning rate as a fraction of the peak",
               opt::in_range(0, 1))
        .field("precision", &T::precision,
               "bf16: the loss runs under autocast for CUDA tensors (fp32 master weights)",
               opt::one_of({"fp32", "bf16"}))
        .field("autocast_cpu", &T::autocast_cpu,
               "with precision bf16, autocast CPU tensors too (fast only with AVX512-BF16/AMX)")
        .field("eval_every", &T::eval_every, "steps between evaluations (0: at the end)",
               opt::at_least(0))
        .field("eval_batches", &T::eval_batches, "batches per evaluation (0: the whole eval set)",
               opt::at_least(0))
        .field("checkpoint_every", &T::checkpoint_every, "steps between checkpoints (0: at the end)",
               opt::at_least(0))
        .field("keep_checkpoints", &T::keep_checkpoints, "newest checkpoints kept (0: all)",
               opt::at_least(0))
        .field("progress", &T::progress, "print the progress line")
        .field("max_nonfinite_steps", &T::max_nonfinite_steps,
               "non-finite steps in a row (each skipped) that stop the run", opt::greater_than(0))
        .field("bucket_mb", &T::bucket_mb, "data parallel: gradient all-reduce bucket (MB)",
               opt::greater_than(0))
        .field("shard_optimizer", &T::shard_optimizer,
               "data parallel: ZeRO-1, AdamW state sharded over the ranks")
        .field("overlap_grad_reduce", &T::overlap_grad_reduce,
               "data parallel: send each gradient bucket during backward once it is complete");
    return s;
  }();
  return schema;
}

nlohmann::json TrainerOptions::to_json() const { return trainer_options_schema().to_json(*this); }

TrainerOptions TrainerOptions::from_json(const nlohmann::json& j) {
  TrainerOptions o = trainer_options_schema().read(j);
  o.validate();
  return o;
}

ConfigSchema train_schema() { return trainer_options_schema().config_schema(); }

// ---------------------------------------------------------------------------------------------
// Parameter groups

ParamGroup parameter_group(const std::vector<NamedModule>& modules, std::string name,
                           const std::function<bool(const std::string&)>& keep) {
  ParamGroup group;
  group.name = std::move(name);
  for (const auto& [module_name, module] : modules) {
    CONCORD_CHECK(module != nullptr, "parameter_group: module '", module_name, "' is null");
    for (const auto& item : module->named_parameters()) {
      if (!item.value().requires_grad()) continue;
      std::string full = module_name + "." + item.key();
      if (keep && !keep(full)) continue;
      group.params.emplace_back(std::move(full), item.value());
    }
  }
  return group;
}

namespace {

// Every group parameter must belong to a trained module: a checkpoint saves modules, so a
// parameter outside them would resume from its fresh value.
std::vector<ParamGroup> checked_groups(const std::vector<NamedModule>& modules,
                                       std::vector<ParamGroup> groups) {
  if (groups.empty()) groups.push_back(parameter_group(modules));
  std::set<const void*> owned;
  for (const auto& [name, module] : modules) {
    CONCORD_CHECK(module != nullptr, "Trainer: module '", name, "' is null");
    for (const auto& p : module->parameters()) owned.insert(p.unsafeGetTensorImpl());
  }
  for (const auto& g : groups) {
    for (const auto& [name, p] : g.params) {
      CONCORD_CHECK(owned.count(p.unsafeGetTensorImpl()), "Trainer: parameter '", name,
                    "' of group '", g.name, "' belongs to none of the trained modules");
      CONCORD_CHECK(p.requires_grad(), "Trainer: parameter '", name, "' of group '", g.name,
                    "' does not require a gradient");
    }
  }
  return groups;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Trainer

Trainer::Trainer(std::vector<NamedModule> modules, TrainerOptions options,
                 std::vector<ParamGroup> groups)
    : modules_(std::move(modules)), options_(std::move(options)),
      optimizer_(checked_groups(modules_, std::move(groups)), options_.optimizer) {
  options_.validate();
  CONCORD_CHECK(!modules_.empty(), "Trainer: no modules to train");
  set_train_mode(true);
  if (auto group = default_process_group()) {
    dp_ = std::make_unique<DataParallel>(
        std::move(group), optimizer_.named_parameters(),
        DataParallelOptions{options_.bucket_mb, options_.shard_optimizer,
                            options_.overlap_grad_reduce});
    dp_->broadcast_modules(modules_);
  }
}

void Trainer::set_train_mode(bool on) {
  for (auto& [name, module] : modules_) module->train(on);
}

void Trainer::restore(const std::filesystem::path& checkpoint, DataCursor& train) {
  const TrainingState state = load_checkpoint(checkpoint, modules_, optimizer_);
  CONCORD_CHECK(state.step <= options_.max_steps, checkpoint.string(), ": checkpoint is at step ",
                state.step, ", past train.max_steps = ", options_.max_steps);
  if (dp_ != nullptr || std::filesystem::is_directory(checkpoint / "optimizer")) {
    // The optimiser state may be spread over shard files (a ZeRO-1 run, any world size): this
    // rank takes the entries of the parameters it updates, from wherever they are.
    std::map<std::string, at::Tensor> merged = load_optimizer_shards(checkpoint);
    if (dp_ != nullptr && dp_->options().shard_optimizer) {
      for (auto it = merged.begin(); it != merged.end();) {
        const std::string& key = it->first;
        const std::string param = key.substr(0, key.rfind('.'));
        it = dp_->owns(param) ? std::next(it) : merged.erase(it);
      }
    }
    optimizer_.load_state_dict(merged, checkpoint.string());
  }
  restored_from_ = checkpoint;
  step_ = state.step;
  train.load_state(state.data);
  eval_history_.clear();
  if (state.extra.is_object() && state.extra.contains("eval_loss")) {
    for (const auto& e : state.extra["eval_loss"]) {
      eval_history_.emplace_back(e.at(0).get<int64_t>(), e.at(1).get<double>());
    }
  }
}

// Data parallel: the step's loss sum, metrics and stop request summed over the ranks, so every
// rank logs, skips and stops alike.
void Trainer::reduce_step(StepStats& stats, double& loss_total, int stop) {
  std::vector<double> v{loss_total, stop != 0 ? 1.0 : 0.0};
  for (const auto& [name, m] : stats.metrics) {
    v.push_back(m.sum);
    v.push_back(m.weight);
  }
  v = dp_->group().all_reduce_sum(v);
  loss_total = v[0];
  stop_agreed_ = v[1] > 0;
  size_t i = 2;
  for (auto& [name, m] : stats.metrics) {
    m.sum = v[i++];
    m.weight = v[i++];
  }
}

StepStats Trainer::step_feed(detail::Feed& feed) {
  CONCORD_CHECK(feed.size() > 0, "Trainer: a step needs at least one micro-batch");
  StepStats stats;
  stats.lr = learning_rate(options_.schedule(), step_);
  optimizer_.set_lr(stats.lr);
  std::vector<int64_t> counts;
  for (int64_t i = 0; i < feed.size(); ++i) {
    counts.push_back(feed.count(i));
    stats.units += counts.back();
    stats.inputs += feed.inputs(i);
  }
  if (dp_ != nullptr) {
    // N is the units of the whole step, over every rank (data_parallel.h).
    const auto totals = dp_->group().all_reduce_sum(
        {static_cast<double>(stats.units), static_cast<double>(stats.inputs)});
    stats.units = static_cast<int64_t>(totals[0]);
    stats.inputs = static_cast<int64_t>(totals[1]);
  }
  CONCORD_CHECK(stats.units > 0, "Trainer: step ", step_ + 1, " has nothing to learn from (every ",
                "micro-batch counts 0 ", feed.unit(), ")");

  // Data parallel: the gradients are views into the buckets the all-reduce sends.
  if (dp_ != nullptr) {
    dp_->begin_step();
  } else {
    optimizer_.zero_grad();
  }
  int64_t last = feed.size() - 1;
  while (last > 0 && counts[static_cast<size_t>(last)] == 0) --last;
  double loss_total = 0;
  // Each micro-batch is backpropagated already scaled by 1/N, so the accumulated gradient is the
  // step's mean-loss gradient without another pass over the gradients.
  const double scale = 1.0 / static_cast<double>(stats.units);
  for (int64_t i = 0; i < feed.size(); ++i) {
    if (counts[static_cast<size_t>(i)] == 0) continue;
    // The last backward sends each gradient bucket as soon as it is complete.
    if (dp_ != nullptr && i == last && options_.overlap_grad_reduce) dp_->arm();
    LossSum part;
    {
      LossAutocast autocast(options_);
      part = feed.loss(i);
    }
    CONCORD_CHECK(part.sum.defined() && part.sum.numel() == 1,
                  "Trainer: the objective's loss sum must be a scalar tensor");
    (part.sum * scale).backward();
    loss_total += part.sum.item<double>();
    accumulate(stats.metrics, part.metrics);
  }
  stop_agreed_ = stop_signal() != 0;
  if (dp_ != nullptr) {
    // The buckets first: every rank issues its collectives in the same order.
    dp_->all_reduce_gradients();
    reduce_step(stats, loss_total, stop_signal());
  }
  stats.loss = loss_total * scale;

  std::vector<at::Tensor> params;
  for (const auto& p : optimizer_.parameters()) {
    if (p.grad().defined()) params.push_back(p);
  }
  if (gradient_hook_) gradient_hook_(params);
  const double max_norm = options_.max_grad_norm > 0 ? options_.max_grad_norm
                                                      : std::numeric_limits<double>::infinity();
  stats.grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  if (!std::isfinite(stats.loss) || !std::isfinite(stats.grad_norm)) {
    // No update: the weights and AdamW's state stay those of the last good step.
    stats.skipped = true;
    optimizer_.zero_grad();
    if (nonfinite_streak_++ == 0) first_nonfinite_step_ = step_ + 1;
    spdlog::warn("step {}: {} is not finite ({}); skipped ({} in a row, the run stops at {})",
                 step_ + 1, std::isfinite(stats.loss) ? "the gradient norm" : "the loss",
                 std::isfinite(stats.loss) ? stats.grad_norm : stats.loss, nonfinite_streak_,
                 options_.max_nonfinite_steps);
  } else {
    nonfinite_streak_ = 0;
    if (dp_ != nullptr) dp_->drop_foreign_gradients();
    optimizer_.step();
    if (dp_ != nullptr) dp_->broadcast_updated_parameters();
  }
  ++step_;
  if (step_hook_ && !stats.skipped) step_hook_(step_);
  if (nonfinite_streak_ >= options_.max_nonfinite_steps) {
    throw Error("Trainer: " + std::to_string(nonfinite_streak_) + " non-finite steps in a row (" +
                std::to_string(first_nonfinite_step_) + " to " + std::to_string(step_) +
                "), the limit train.max_nonfinite_steps; no checkpoint was written since step " +
                std::to_string(first_nonfinite_step_ - 1) +
                ". Lower train.lr, check the data, or resume from that checkpoint");
  }
  return stats;
}

EvalResult Trainer::evaluate_feed(detail::Feed& feed, int64_t batches) {
  set_train_mode(false);
  EvalResult result;
  try {
    result = detail::evaluate_feed(feed, batches, options_, dp_ ? &dp_->group() : nullptr);
  } catch (...) {
    set_train_mode(true);
    throw;
  }
  set_train_mode(true);
  return result;
}

// Data parallel: every rank continues from the checkpoint rank 0 resumed from (the task on
// another rank may not have found it: only rank 0's run folder is the run's), and learns where
// rank 0 writes checkpoints (for its ZeRO-1 shard).
void Trainer::sync_resume(DataCursor& train) {
  const std::string mine = restored_from_ ? restored_from_->string() : "";
  const std::string from = dp_->group().broadcast_string(mine, 0);
  if (!from.empty() && from != mine) {
    CONCORD_CHECK(std::filesystem::is_directory(from), "rank ", dp_->rank(),
                  " cannot read the checkpoint rank 0 resumed from (", from,
                  "): the run folder must be on a filesystem every rank sees");
    restore(from, train);
  }
  const auto steps = dp_->group().all_reduce_sum({static_cast<double>(step_)});
  CONCORD_CHECK(steps[0] == static_cast<double>(step_ * dp_->world_size()), "rank ",
                dp_->rank(), " is at step ", step_,
                " while the ranks' steps differ (resumed from different checkpoints)");
}

TrainResult Trainer::fit_feed(detail::Feed& train, detail::Feed* eval, RunDirectory* dir) {
  CONCORD_CHECK(train.cursor() != nullptr, "Trainer::fit: the training data has no source");
  TrainResult result;
  const auto start = Clock::now();
  std::unique_ptr<ProgressLine> progress;
  const bool writer = writes_files();
  if (options_.progress && writer) progress = std::make_unique<ProgressLine>(options_.max_steps);
  std::filesystem::path checkpoints = dir != nullptr ? dir->file("checkpoints") : "";
  if (dp_ != nullptr) {
    sync_resume(*train.cursor());
    checkpoints = dp_->group().broadcast_string(checkpoints.string(), 0);
  }
  const bool saves = !checkpoints.empty();
  // Every rank logs into the folder it was given (tasks give ranks other than 0 a scratch
  // folder: tasks.h); checkpoints go where rank 0's do, written by rank 0.
  RunDirectory* log_dir = dir;

  auto run_eval = [&] {
    if (eval == nullptr) return;
    const EvalResult e = evaluate_feed(*eval, options_.eval_batches);
    eval_history_.emplace_back(step_, e.loss);
    result.final_eval_loss = e.loss;
    if (log_dir != nullptr) {
      std::map<std::string, double> values{{"eval/loss", e.loss}};
      if (eval->loss_is_nll()) values["eval/perplexity"] = std::exp(e.loss);
      for (const auto& [name, m] : e.metrics) values["eval/" + name] = m.value();
      log_dir->metrics().log(step_, values);
    }
  };
  auto checkpoint = [&] {
    if (!saves) return;
    TrainingState state;
    state.step = step_;
    state.data = train.cursor()->state();
    nlohmann::json history = nlohmann::json::array();
    for (const auto& [s, l] : eval_history_) history.push_back({s, l});
    state.extra = {{"eval_loss", history}};
    result.last_checkpoint = save(checkpoints, state);
  };

  while (step_ < options_.max_steps) {
    const auto t0 = Clock::now();
    train.fetch(options_.grad_accum_steps);
    const StepStats stats = step_feed(train);
    const double step_ms = ms_since(t0);

    result.train_loss.emplace_back(step_, stats.loss);
    result.final_loss = stats.loss;
    result.inputs += stats.inputs;
    if (log_dir != nullptr) {
      std::map<std::string, double> values{{"train/loss", stats.loss},
                                           {"train/grad_norm", stats.grad_norm},
                                           {"train/learning_rate", stats.lr},
                                           {"train/" + train.unit(), static_cast<double>(stats.inputs)},
                                           {"train/step_ms", step_ms}};
      if (stats.skipped) values["train/skipped_steps"] = 1;
      for (const auto& [name, m] : stats.metrics) values["train/" + name] = m.value();
      log_dir->metrics().log(step_, values);
    }
    if (progress) {
      ProgressStats p;
      p.step = step_;
      p.loss = stats.loss;
      p.lr = stats.lr;
      p.step_ms = step_ms;
      p.tokens = static_cast<double>(stats.inputs);
      p.unit = train.unit();
      p.extra["norm"] = stats.grad_norm;
      progress->update(p);
    }
    const bool last = step_ == options_.max_steps;
    // No checkpoint inside a run of skipped steps: the newest stays the last good one.
    const bool healthy = nonfinite_streak_ == 0;
    if (last || (options_.eval_every > 0 && step_ % options_.eval_every == 0)) run_eval();
    if (healthy && (last || stop_agreed_ ||
                    (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0))) {
      checkpoint();
    }
    if (stop_agreed_ && !last) {
      if (progress) progress->finish();
      const int signal = stop_signal() != 0 ? stop_signal() : 15;
      throw Stopped("stopped by " + signal_name(signal) + " after step " + std::to_string(step_) +
                        (result.last_checkpoint && healthy
                             ? "; checkpoint " + result.last_checkpoint->string() +
                                   " (continue with --resume)"
                             : ""),
                    signal);
    }
  }
  if (progress) progress->finish();
  result.steps = step_;
  result.eval_loss = eval_history_;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

// Rank 0 writes the checkpoint; with ZeRO-1 every other rank first writes its optimiser shard
// beside it, and rank 0 moves the shards into the checkpoint before it is renamed into place,
// so a checkpoint is complete or absent. Alone: save_checkpoint.
std::filesystem::path Trainer::save(const std::filesystem::path& checkpoints_dir,
                                    TrainingState state) {
  if (dp_ == nullptr) {
    return save_checkpoint(checkpoints_dir, modules_, optimizer_, state, options_.keep_checkpoints);
  }
  if (!state.extra.is_object()) state.extra = nlohmann::json::object();
  state.extra["data_parallel"] = dp_->layout();
  const std::filesystem::path dir = dp_->group().broadcast_string(checkpoints_dir.string(), 0);
  const bool sharded = dp_->options().shard_optimizer;
  std::vector<std::pair<std::string, std::filesystem::path>> shards;
  if (sharded) {
    for (int64_t r = 1; r < dp_->world_size(); ++r) {
      shards.emplace_back(optimizer_shard_name(r, dp_->world_size()),
                          pending_shard_path(dir, state.step, r));
    }
    if (dp_->rank() != 0) {
      save_optimizer_shard(shards[static_cast<size_t>(dp_->rank() - 1)].second, optimizer_);
    }
    dp_->group().barrier();
  }
  std::filesystem::path written;
  if (dp_->rank() == 0) {
    written = save_checkpoint(dir, modules_, optimizer_, state, options_.keep_checkpoints, shards);
  }
  written = dp_->group().broadcast_string(written.string(), 0);
  return written;
}

EvalResult detail::evaluate_feed(Feed& feed, int64_t batches, const TrainerOptions& options,
                                 ProcessGroup* group) {
  DataCursor* cursor = feed.cursor();
  CONCORD_CHECK(cursor != nullptr, "evaluation: the data has no source");
  const int64_t n_batches = batches > 0 ? std::min(batches, cursor->batches_per_epoch())
                                        : cursor->batches_per_epoch();
  CONCORD_CHECK(n_batches > 0, "evaluation: the data has no batches");
  // Fewer batches than ranks: every rank evaluates them all (each rank's metrics must have the
  // same names for the reduction).
  if (group != nullptr && n_batches < group->world_size()) group = nullptr;
  const int64_t rank = group != nullptr ? group->rank() : 0;
  const int64_t world = group != nullptr ? group->world_size() : 1;
  const nlohmann::json position = cursor->state();
  EvalResult result;
  double sum = 0;
  double count = 0;
  {
    c10::InferenceMode guard;
    LossAutocast autocast(options);
    for (int64_t i = 0; i < n_batches; ++i) {
      feed.fetch(1);  // every rank walks the same batches; each computes its share
      if (i % world != rank) continue;
      const LossSum part = feed.loss(0);
      sum += part.sum.item<double>();
      count += static_cast<double>(feed.count(0));
      accumulate(result.metrics, part.metrics);
    }
  }
  cursor->load_state(position);
  if (group != nullptr) {
    std::vector<double> v{sum, count};
    for (const auto& [name, m] : result.metrics) {
      v.push_back(m.sum);
      v.push_back(m.weight);
    }
    v = group->all_reduce_sum(v);
    sum = v[0];
    count = v[1];
    size_t k = 2;
    for (auto& [name, m] : result.metrics) {
      m.sum = v[k++];
      m.weight = v[k++];
    }
  }
  CONCORD_CHECK(count > 0, "evaluation: nothing to evaluate in ", n_batches, " batches (every ",
                "batch counts 0 ", feed.unit(), ")");
  result.loss = sum / count;
  return result;
}

}  // namespace concord::train
