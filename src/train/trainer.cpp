#include "concord/train/trainer.h"

#include <c10/core/InferenceMode.h>
#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <memory>

#include "concord/core/error.h"
#include "concord/core/progress.h"
#include "concord/train/autocast.h"
#include "concord/train/checkpoint.h"

namespace concord::train {

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::vector<std::pair<std::string, at::Tensor>> named_parameters(lm::CausalLM model) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : model->named_parameters()) out.emplace_back(item.key(), item.value());
  return out;
}

// Sum of the token losses of `batch` under `model`, and its number of targets. Only positions
// with a target go through the LM head: for SFT that skips every prompt token's [V] logits.
std::pair<at::Tensor, int64_t> batch_loss_sum(lm::CausalLM model, const TrainBatch& batch) {
  const c10::Device device = model->embed->weight.device();
  const at::Tensor targets = batch.targets.to(device).reshape({-1});
  const at::Tensor hidden =
      model->hidden_states(batch.input_ids, batch.attention_mask, nullptr, batch.position_ids,
                           batch.segment_ids);
  at::Tensor flat = hidden.reshape({-1, hidden.size(-1)});
  at::Tensor flat_targets = targets;
  const at::Tensor keep = targets.ne(data::kIgnoreIndex);
  const int64_t n = keep.sum().item<int64_t>();
  if (n < targets.numel()) {
    const at::Tensor index = keep.nonzero().squeeze(1);
    flat = flat.index_select(0, index);
    flat_targets = targets.index_select(0, index);
  }
  // The LM head and the loss together (ops::linear_cross_entropy): on CPU the [n, V] logits
  // are never materialised.
  at::Tensor sum = model->token_loss(flat, flat_targets, at::Reduction::Sum, data::kIgnoreIndex);
  return {sum, n};
}

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
  CONCORD_CHECK(max_steps > 0, "train.max_steps must be positive, got ", max_steps);
  CONCORD_CHECK(grad_accum_steps > 0, "train.grad_accum_steps must be positive, got ",
                grad_accum_steps);
  CONCORD_CHECK(max_grad_norm >= 0, "train.max_grad_norm must be >= 0, got ", max_grad_norm);
  CONCORD_CHECK(precision == "fp32" || precision == "bf16",
                "train.precision must be fp32 or bf16, got '", precision, "'");
  CONCORD_CHECK(eval_every >= 0 && eval_batches >= 0 && checkpoint_every >= 0 &&
                    keep_checkpoints >= 0,
                "train.eval_every, eval_batches, checkpoint_every and keep_checkpoints must be >= 0");
  optimizer.validate();
  schedule().validate();
}

nlohmann::json TrainerOptions::to_json() const {
  return {{"max_steps", max_steps},
          {"grad_accum_steps", grad_accum_steps},
          {"max_grad_norm", max_grad_norm},
          {"lr", optimizer.lr},
          {"beta1", optimizer.beta1},
          {"beta2", optimizer.beta2},
          {"eps", optimizer.eps},
          {"weight_decay", optimizer.weight_decay},
          {"lr_schedule", lr_schedule},
          {"warmup_steps", warmup_steps},
          {"min_lr_ratio", min_lr_ratio},
          {"precision", precision},
          {"eval_every", eval_every},
          {"eval_batches", eval_batches},
          {"checkpoint_every", checkpoint_every},
          {"keep_checkpoints", keep_checkpoints},
          {"progress", progress}};
}

TrainerOptions TrainerOptions::from_json(const nlohmann::json& j) {
  TrainerOptions o;
  o.max_steps = j.at("max_steps").get<int64_t>();
  o.grad_accum_steps = j.at("grad_accum_steps").get<int64_t>();
  o.max_grad_norm = j.at("max_grad_norm").get<double>();
  o.optimizer.lr = j.at("lr").get<double>();
  o.optimizer.beta1 = j.at("beta1").get<double>();
  o.optimizer.beta2 = j.at("beta2").get<double>();
  o.optimizer.eps = j.at("eps").get<double>();
  o.optimizer.weight_decay = j.at("weight_decay").get<double>();
  o.lr_schedule = j.at("lr_schedule").get<std::string>();
  o.warmup_steps = j.at("warmup_steps").get<int64_t>();
  o.min_lr_ratio = j.at("min_lr_ratio").get<double>();
  o.precision = j.at("precision").get<std::string>();
  o.eval_every = j.at("eval_every").get<int64_t>();
  o.eval_batches = j.at("eval_batches").get<int64_t>();
  o.checkpoint_every = j.at("checkpoint_every").get<int64_t>();
  o.keep_checkpoints = j.at("keep_checkpoints").get<int64_t>();
  o.progress = j.at("progress").get<bool>();
  o.validate();
  return o;
}

ConfigSchema train_schema() {
  const TrainerOptions d;
  ConfigSchema s("optimisation");
  s.optional("max_steps", ConfigType::Int, d.max_steps, "optimizer steps")
      .optional("grad_accum_steps", ConfigType::Int, d.grad_accum_steps,
                "micro-batches per optimizer step")
      .optional("max_grad_norm", ConfigType::Float, d.max_grad_norm,
                "global gradient-norm clipping (0: off)")
      .optional("lr", ConfigType::Float, d.optimizer.lr, "peak learning rate")
      .optional("beta1", ConfigType::Float, d.optimizer.beta1, "AdamW beta1")
      .optional("beta2", ConfigType::Float, d.optimizer.beta2, "AdamW beta2")
      .optional("eps", ConfigType::Float, d.optimizer.eps, "AdamW epsilon")
      .optional("weight_decay", ConfigType::Float, d.optimizer.weight_decay,
                "decoupled weight decay on weight matrices")
      .choice("lr_schedule", {"cosine", "linear", "constant"}, d.lr_schedule,
              "decay after warm-up")
      .optional("warmup_steps", ConfigType::Int, d.warmup_steps, "linear warm-up steps")
      .optional("min_lr_ratio", ConfigType::Float, d.min_lr_ratio,
                "final learning rate as a fraction of the peak")
      .choice("precision", {"fp32", "bf16"}, d.precision,
              "bf16: autocast on CUDA (fp32 master weights); CPU runs stay fp32")
      .optional("eval_every", ConfigType::Int, d.eval_every, "steps between evaluations (0: at the end)")
      .optional("eval_batches", ConfigType::Int, d.eval_batches,
                "batches per evaluation (0: the whole eval set)")
      .optional("checkpoint_every", ConfigType::Int, d.checkpoint_every,
                "steps between checkpoints (0: at the end)")
      .optional("keep_checkpoints", ConfigType::Int, d.keep_checkpoints,
                "newest checkpoints kept (0: all)")
      .optional("progress", ConfigType::Bool, d.progress, "print the progress line");
  return s;
}

// ---------------------------------------------------------------------------------------------
// Trainer

Trainer::Trainer(lm::CausalLM model, TrainerOptions options)
    : model_(model), options_(std::move(options)),
      optimizer_(named_parameters(model), options_.optimizer) {
  options_.validate();
  model_->train();
}

void Trainer::restore(const std::filesystem::path& checkpoint, BatchSource& train) {
  const TrainingState state = load_checkpoint(checkpoint, model_, optimizer_);
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

std::pair<at::Tensor, int64_t> Trainer::loss_sum(const TrainBatch& batch) {
  const bool autocast = options_.precision == "bf16" && model_->embed->weight.is_cuda();
  AutocastGuard guard(autocast);
  return batch_loss_sum(model_, batch);
}

StepStats Trainer::train_step(const std::vector<TrainBatch>& micro_batches) {
  CONCORD_CHECK(!micro_batches.empty(), "Trainer: a step needs at least one micro-batch");
  StepStats stats;
  stats.lr = learning_rate(options_.schedule(), step_);
  optimizer_.set_lr(stats.lr);
  for (const auto& mb : micro_batches) {
    stats.tokens += mb.input_ids.numel();
    stats.target_tokens += mb.target_tokens();
  }
  CONCORD_CHECK(stats.target_tokens > 0, "Trainer: step ", step_ + 1,
                " has no target tokens (every target is -100)");

  optimizer_.zero_grad();
  double loss_total = 0;
  const double scale = 1.0 / static_cast<double>(stats.target_tokens);
  for (const auto& mb : micro_batches) {
    auto [sum, n] = loss_sum(mb);
    if (n == 0) continue;
    (sum * scale).backward();
    loss_total += sum.item<double>();
  }
  stats.loss = loss_total * scale;
  CONCORD_CHECK(std::isfinite(stats.loss), "Trainer: the loss is not finite (", stats.loss,
                ") at step ", step_ + 1, "; lower train.lr or check the data");

  std::vector<at::Tensor> params;
  for (const auto& p : model_->parameters()) {
    if (p.grad().defined()) params.push_back(p);
  }
  const double max_norm = options_.max_grad_norm > 0 ? options_.max_grad_norm
                                                      : std::numeric_limits<double>::infinity();
  stats.grad_norm = torch::nn::utils::clip_grad_norm_(params, max_norm);
  optimizer_.step();
  ++step_;
  return stats;
}

double Trainer::evaluate(BatchSource& eval, int64_t batches) {
  const bool autocast = options_.precision == "bf16" && model_->embed->weight.is_cuda();
  return mean_token_loss(model_, eval, batches, autocast);
}

TrainResult Trainer::fit(BatchSource& train, BatchSource* eval, RunDirectory* dir) {
  TrainResult result;
  const auto start = Clock::now();
  std::unique_ptr<ProgressLine> progress;
  if (options_.progress) progress = std::make_unique<ProgressLine>(options_.max_steps);
  const std::filesystem::path checkpoints = dir != nullptr ? dir->file("checkpoints") : "";

  auto run_eval = [&] {
    if (eval == nullptr) return;
    const double loss = evaluate(*eval, options_.eval_batches);
    eval_history_.emplace_back(step_, loss);
    result.final_eval_loss = loss;
    if (dir != nullptr) {
      dir->metrics().log(step_, {{"eval/loss", loss}, {"eval/perplexity", std::exp(loss)}});
    }
  };
  auto checkpoint = [&] {
    if (dir == nullptr) return;
    TrainingState state;
    state.step = step_;
    state.data = train.state();
    nlohmann::json history = nlohmann::json::array();
    for (const auto& [s, l] : eval_history_) history.push_back({s, l});
    state.extra = {{"eval_loss", history}};
    result.last_checkpoint =
        save_checkpoint(checkpoints, model_, optimizer_, state, options_.keep_checkpoints);
  };

  while (step_ < options_.max_steps) {
    const auto t0 = Clock::now();
    std::vector<TrainBatch> micro;
    micro.reserve(static_cast<size_t>(options_.grad_accum_steps));
    for (int64_t i = 0; i < options_.grad_accum_steps; ++i) micro.push_back(train.next());
    const StepStats stats = train_step(micro);
    const double step_ms = ms_since(t0);

    result.train_loss.emplace_back(step_, stats.loss);
    result.final_loss = stats.loss;
    result.tokens += stats.tokens;
    if (dir != nullptr) {
      dir->metrics().log(step_, {{"train/loss", stats.loss},
                                 {"train/grad_norm", stats.grad_norm},
                                 {"train/learning_rate", stats.lr},
                                 {"train/tokens", static_cast<double>(stats.tokens)},
                                 {"train/step_ms", step_ms}});
    }
    if (progress) {
      ProgressStats p;
      p.step = step_;
      p.loss = stats.loss;
      p.lr = stats.lr;
      p.step_ms = step_ms;
      p.tokens = static_cast<double>(stats.tokens);
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

double mean_token_loss(lm::CausalLM model, BatchSource& data, int64_t batches, bool autocast) {
  const int64_t n_batches = batches > 0 ? std::min(batches, data.batches_per_epoch())
                                        : data.batches_per_epoch();
  CONCORD_CHECK(n_batches > 0, "evaluation: the data has no batches");
  const nlohmann::json cursor = data.state();
  const bool was_training = model->is_training();
  model->eval();
  double sum = 0;
  int64_t count = 0;
  {
    c10::InferenceMode guard;
    AutocastGuard cast(autocast);
    for (int64_t i = 0; i < n_batches; ++i) {
      auto [s, n] = batch_loss_sum(model, data.next());
      sum += s.item<double>();
      count += n;
    }
  }
  data.load_state(cursor);
  if (was_training) model->train();
  CONCORD_CHECK(count > 0, "evaluation: no target tokens in ", n_batches, " batches");
  return sum / static_cast<double>(count);
}

}  // namespace concord::train
