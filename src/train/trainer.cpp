#include "concord/train/trainer.h"

#include <c10/core/InferenceMode.h>
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include "concord/core/error.h"
#include "concord/core/options.h"
#include "concord/core/progress.h"
#include "concord/train/autocast.h"
#include "concord/train/checkpoint.h"

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
        .field("progress", &T::progress, "print the progress line");
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
}

void Trainer::set_train_mode(bool on) {
  for (auto& [name, module] : modules_) module->train(on);
}

void Trainer::restore(const std::filesystem::path& checkpoint, DataCursor& train) {
  const TrainingState state = load_checkpoint(checkpoint, modules_, optimizer_);
  CONCORD_CHECK(state.step <= options_.max_steps, checkpoint.string(), ": checkpoint is at step ",
                state.step, ", past train.max_steps = ", options_.max_steps);
  step_ = state.step;
  train.load_state(state.data);
  eval_history_.clear();
  if (state.extra.is_object() && state.extra.contains("eval_loss")) {
    for (const auto& e : state.extra["eval_loss"]) {
      eval_history_.emplace_back(e.at(0).get<int64_t>(), e.at(1).get<double>());
    }
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
  CONCORD_CHECK(stats.units > 0, "Trainer: step ", step_ + 1, " has nothing to learn from (every ",
                "micro-batch counts 0 ", feed.unit(), ")");

  optimizer_.zero_grad();
  double loss_total = 0;
  // Each micro-batch is backpropagated already scaled by 1/N, so the accumulated gradient is the
  // step's mean-loss gradient without another pass over the gradients.
  const double scale = 1.0 / static_cast<double>(stats.units);
  for (int64_t i = 0; i < feed.size(); ++i) {
    if (counts[static_cast<size_t>(i)] == 0) continue;
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
  stats.loss = loss_total * scale;
  CONCORD_CHECK(std::isfinite(stats.loss), "Trainer: the loss is not finite (", stats.loss,
                ") at step ", step_ + 1, "; lower train.lr or check the data");

  std::vector<at::Tensor> params;
  for (const auto& p : optimizer_.parameters()) {
    if (p.grad().defined()) params.push_back(p);
  }
  if (gradient_hook_) gradient_hook_(params);
  const double max_norm = options_.max_grad_norm > 0 ? options_.max_grad_norm
                                                      : std::numeric_limits<double>::infinity();
  stats.grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  optimizer_.step();
  ++step_;
  if (step_hook_) step_hook_(step_);
  return stats;
}

EvalResult Trainer::evaluate_feed(detail::Feed& feed, int64_t batches) {
  set_train_mode(false);
  EvalResult result;
  try {
    result = detail::evaluate_feed(feed, batches, options_);
  } catch (...) {
    set_train_mode(true);
    throw;
  }
  set_train_mode(true);
  return result;
}

TrainResult Trainer::fit_feed(detail::Feed& train, detail::Feed* eval, RunDirectory* dir) {
  CONCORD_CHECK(train.cursor() != nullptr, "Trainer::fit: the training data has no source");
  TrainResult result;
  const auto start = Clock::now();
  std::unique_ptr<ProgressLine> progress;
  if (options_.progress) progress = std::make_unique<ProgressLine>(options_.max_steps);
  const std::filesystem::path checkpoints = dir != nullptr ? dir->file("checkpoints") : "";

  auto run_eval = [&] {
    if (eval == nullptr) return;
    const EvalResult e = evaluate_feed(*eval, options_.eval_batches);
    eval_history_.emplace_back(step_, e.loss);
    result.final_eval_loss = e.loss;
    if (dir != nullptr) {
      std::map<std::string, double> values{{"eval/loss", e.loss}};
      if (eval->loss_is_nll()) values["eval/perplexity"] = std::exp(e.loss);
      for (const auto& [name, m] : e.metrics) values["eval/" + name] = m.value();
      dir->metrics().log(step_, values);
    }
  };
  auto checkpoint = [&] {
    if (dir == nullptr) return;
    TrainingState state;
    state.step = step_;
    state.data = train.cursor()->state();
    nlohmann::json history = nlohmann::json::array();
    for (const auto& [s, l] : eval_history_) history.push_back({s, l});
    state.extra = {{"eval_loss", history}};
    result.last_checkpoint =
        save_checkpoint(checkpoints, modules_, optimizer_, state, options_.keep_checkpoints);
  };

  while (step_ < options_.max_steps) {
    const auto t0 = Clock::now();
    train.fetch(options_.grad_accum_steps);
    const StepStats stats = step_feed(train);
    const double step_ms = ms_since(t0);

    result.train_loss.emplace_back(step_, stats.loss);
    result.final_loss = stats.loss;
    result.inputs += stats.inputs;
    if (dir != nullptr) {
      std::map<std::string, double> values{{"train/loss", stats.loss},
                                           {"train/grad_norm", stats.grad_norm},
                                           {"train/learning_rate", stats.lr},
                                           {"train/" + train.unit(), static_cast<double>(stats.inputs)},
                                           {"train/step_ms", step_ms}};
      for (const auto& [name, m] : stats.metrics) values["train/" + name] = m.value();
      dir->metrics().log(step_, values);
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
    if (last || (options_.eval_every > 0 && step_ % options_.eval_every == 0)) run_eval();
    if (last || (options_.checkpoint_every > 0 && step_ % options_.checkpoint_every == 0)) checkpoint();
  }
  if (progress) progress->finish();
  result.steps = step_;
  result.eval_loss = eval_history_;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

EvalResult detail::evaluate_feed(Feed& feed, int64_t batches, const TrainerOptions& options) {
  DataCursor* cursor = feed.cursor();
  CONCORD_CHECK(cursor != nullptr, "evaluation: the data has no source");
  const int64_t n_batches = batches > 0 ? std::min(batches, cursor->batches_per_epoch())
                                        : cursor->batches_per_epoch();
  CONCORD_CHECK(n_batches > 0, "evaluation: the data has no batches");
  const nlohmann::json position = cursor->state();
  EvalResult result;
  double sum = 0;
  int64_t count = 0;
  {
    c10::InferenceMode guard;
    LossAutocast autocast(options);
    for (int64_t i = 0; i < n_batches; ++i) {
      feed.fetch(1);
      const LossSum part = feed.loss(0);
      sum += part.sum.item<double>();
      count += feed.count(0);
      accumulate(result.metrics, part.metrics);
    }
  }
  cursor->load_state(position);
  CONCORD_CHECK(count > 0, "evaluation: nothing to evaluate in ", n_batches, " batches (every ",
                "batch counts 0 ", feed.unit(), ")");
  result.loss = sum / static_cast<double>(count);
  return result;
}

}  // namespace concord::train
