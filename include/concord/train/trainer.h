// The training loop every capability shares: pretraining and SFT, reward models, PPO, KOALA's
// distillation. It knows neither the model nor the batch type. It is given
//
//   - the modules it trains and checkpoints, by name (NamedModule),
//   - which of their parameters train, in groups with their own peak rate and weight decay
//     (ParamGroup; default: every parameter that requires a gradient, one group),
//   - an Objective<Batch> (objective.h) and a BatchSource<Batch> per call to fit().
//
// An optimizer step over micro-batches b_1..b_k minimises L = (1/N) sum_i loss_sum(b_i) with
// N = sum_i count(b_i) (objective.h), then runs the gradient hook (the seam where data-parallel
// all-reduce goes), global-norm gradient clipping, and AdamW (adamw.h) at the rate of the
// schedule (lr_schedule.h). Periodic evaluation, checkpoints of every named module with the
// optimiser, RNG, step and data cursor (checkpoint.h), metrics.jsonl and the progress line.
//
// Resuming from a checkpoint restores all of that; on CPU the resumed run ends with bit-for-bit
// the weights of an uninterrupted run (tests/train).
//
// Faults: a step whose loss or gradient norm is not finite is skipped and logged
// (train/skipped_steps), and max_nonfinite_steps of them in a row stop the run with a clear
// error, no checkpoint having been written since the last good step. A stop request (SIGINT,
// SIGTERM: core/stop_signal.h) ends fit() after the current step with a checkpoint and a
// Stopped exception.
//
// Data parallel: when the process is one of a torchrun-style job (WORLD_SIZE > 1), the Trainer
// joins default_process_group() and trains data parallel (data_parallel.h): rank 0's weights are
// broadcast at construction, each step's loss is normalised by the units of all ranks and the
// gradients summed over ranks before clipping. Checkpoints go to rank 0's folder, written by
// rank 0 (with ZeRO-1, each rank adds its optimiser shard); each rank logs metrics and the
// progress line into the folder it is given, so give ranks other than 0 a scratch folder, as
// the task runner does (tasks.h: Task::writes_rank_parts), or none. A rank that has not
// restored the checkpoint rank 0 resumed from restores it at the start of fit().
//
//   lm::CausalLM model(config);
//   train::Trainer trainer({{"model", model.ptr()}}, options);
//   train::NextTokenObjective objective(model);           // next_token.h
//   train::SampledBatches<data::PretrainDataset> batches(dataset, sampling);
//   trainer.fit(objective, batches);
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/config.h"
#include "concord/core/options.h"
#include "concord/core/report.h"
#include "concord/train/adamw.h"
#include "concord/train/checkpoint.h"
#include "concord/train/data_parallel.h"
#include "concord/train/lr_schedule.h"
#include "concord/train/objective.h"

namespace concord::train {

struct TrainerOptions {
  int64_t max_steps = 100;        ///< optimizer steps
  int64_t grad_accum_steps = 1;   ///< micro-batches per optimizer step
  double max_grad_norm = 1.0;     ///< global-norm clipping; 0 turns it off
  AdamWOptions optimizer;
  std::string lr_schedule = "cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  /// fp32, or bf16: the loss runs under autocast (matmuls in bf16; parameters, optimizer state
  /// and reductions in fp32) for CUDA tensors, and for CPU tensors too with autocast_cpu.
  std::string precision = "fp32";
  bool autocast_cpu = false;      ///< with precision bf16: autocast CPU ops as well
  int64_t eval_every = 0;         ///< steps between evaluations (0: only at the end)
  int64_t eval_batches = 0;       ///< batches per evaluation (0: one pass over the eval data)
  int64_t checkpoint_every = 0;   ///< steps between checkpoints (0: only at the end)
  int64_t keep_checkpoints = 2;   ///< newest checkpoints kept (0: all)
  bool progress = true;           ///< the per-step progress line on stderr
  /// A step whose loss or gradient norm is not finite is skipped (no update, logged); this many
  /// in a row stop the run, leaving the newest checkpoint from before the first of them.
  int64_t max_nonfinite_steps = 3;
  /// Data parallel (WORLD_SIZE > 1): gradient all-reduce bucket size in MB.
  double bucket_mb = 25;
  /// Data parallel: ZeRO stage 1, each rank keeps and updates AdamW's state of its own share of
  /// the parameters (data_parallel.h).
  bool shard_optimizer = false;
  /// Data parallel: send each gradient bucket during backward, as soon as it is complete
  /// (false: all buckets after backward).
  bool overlap_grad_reduce = true;

  /// The schedule these options describe.
  LrScheduleOptions schedule() const;
  void validate() const;
  nlohmann::json to_json() const;
  /// Reads a resolved `train` section (train_schema()).
  static TrainerOptions from_json(const nlohmann::json& train);
};

/// The keys of a run config's `train` section, declared once (core/options.h): their types,
/// defaults (TrainerOptions{}), help and rules; TrainerOptions' JSON in and out come from it.
const OptionsSchema<TrainerOptions>& trainer_options_schema();
/// trainer_options_schema().config_schema().
ConfigSchema train_schema();

struct StepStats {
  double loss = 0;       ///< the step's loss L (mean over its units)
  double grad_norm = 0;  ///< after the gradient hook, before clipping
  double lr = 0;         ///< the base group's rate
  int64_t inputs = 0;    ///< inputs of the step (Objective::inputs: tokens for a language model)
  int64_t units = 0;     ///< N: the units the loss is normalised by
  Metrics metrics;       ///< the objective's metrics, summed over the micro-batches
  bool skipped = false;  ///< the loss or gradient was not finite: no update was made
};

struct EvalResult {
  double loss = 0;  ///< sum of loss sums / sum of counts over the evaluated batches
  Metrics metrics;
};

struct TrainResult {
  int64_t steps = 0;                                   ///< final step
  double final_loss = 0;                               ///< training loss of the last step
  std::optional<double> final_eval_loss;
  std::vector<std::pair<int64_t, double>> train_loss;  ///< (step, loss) of the steps run here
  std::vector<std::pair<int64_t, double>> eval_loss;   ///< (step, loss), whole run
  int64_t inputs = 0;                                  ///< inputs of the steps run here
  double seconds = 0;                                  ///< wall time of the steps run here
  std::optional<std::filesystem::path> last_checkpoint;
};

/// Called after the backward passes of a step, before clipping, with every parameter that has
/// a gradient (data parallel all-reduces them here).
using GradientHook = std::function<void(const std::vector<at::Tensor>& params)>;
/// Called after each optimizer step with the new step number (an EMA of the weights updates
/// here).
using StepHook = std::function<void(int64_t step)>;

/// One group holding the parameters of `modules` that require a gradient and whose full name
/// "<module>.<parameter>" passes `keep` (default: all).
ParamGroup parameter_group(const std::vector<NamedModule>& modules, std::string name = "default",
                           const std::function<bool(const std::string&)>& keep = {});

namespace detail {
// Batch is deduced from the objective alone; the sources convert as ordinary arguments
// (a SampledBatches* or nullptr for the eval source).
using concord::detail::non_deduced_t;

// A type-erased objective over buffered micro-batches, so the loop below is compiled once.
class Feed {
 public:
  virtual ~Feed() = default;
  virtual void fetch(int64_t n) = 0;  // replaces the buffer with the source's next n batches
  virtual int64_t size() const = 0;
  virtual int64_t count(int64_t i) const = 0;
  virtual int64_t inputs(int64_t i) const = 0;
  virtual LossSum loss(int64_t i) = 0;
  virtual std::string unit() const = 0;
  virtual bool loss_is_nll() const = 0;
  virtual DataCursor* cursor() = 0;  // null for a fixed list of batches
};

template <typename Batch>
class FeedOf final : public Feed {
 public:
  FeedOf(Objective<Batch>& objective, BatchSource<Batch>* source, std::vector<Batch> batches = {})
      : objective_(objective), source_(source), batches_(std::move(batches)) {}
  void fetch(int64_t n) override {
    batches_.clear();
    for (int64_t i = 0; i < n; ++i) batches_.push_back(source_->next());
  }
  int64_t size() const override { return static_cast<int64_t>(batches_.size()); }
  int64_t count(int64_t i) const override { return objective_.count(at(i)); }
  int64_t inputs(int64_t i) const override { return objective_.inputs(at(i)); }
  LossSum loss(int64_t i) override { return objective_.loss(at(i)); }
  std::string unit() const override { return objective_.unit(); }
  bool loss_is_nll() const override { return objective_.loss_is_nll(); }
  DataCursor* cursor() override { return source_; }

 private:
  const Batch& at(int64_t i) const { return batches_[static_cast<size_t>(i)]; }
  Objective<Batch>& objective_;
  BatchSource<Batch>* source_;
  std::vector<Batch> batches_;
};
}  // namespace detail

class Trainer {
 public:
  /// Trains `groups`' parameters (empty: parameter_group(modules)), which must all belong to
  /// `modules`; `modules` are put in train mode and are what checkpoints hold.
  Trainer(std::vector<NamedModule> modules, TrainerOptions options,
          std::vector<ParamGroup> groups = {});

  /// Restores the modules, optimizer, RNG, step and `train`'s cursor from a checkpoint folder.
  void restore(const std::filesystem::path& checkpoint, DataCursor& train);

  /// Runs from the current step to max_steps. With `dir`: metrics.jsonl (train/loss,
  /// train/grad_norm, train/learning_rate, train/<metric>, eval/loss, eval/<metric>, ...) and
  /// checkpoints in dir/checkpoints.
  template <typename Batch>
  TrainResult fit(Objective<Batch>& objective, detail::non_deduced_t<BatchSource<Batch>>& train,
                  detail::non_deduced_t<BatchSource<Batch>>* eval = nullptr,
                  RunDirectory* dir = nullptr) {
    detail::FeedOf<Batch> train_feed(objective, &train);
    if (eval == nullptr) return fit_feed(train_feed, nullptr, dir);
    detail::FeedOf<Batch> eval_feed(objective, eval);
    return fit_feed(train_feed, &eval_feed, dir);
  }

  /// One optimizer step over these micro-batches.
  template <typename Batch>
  StepStats train_step(Objective<Batch>& objective,
                       detail::non_deduced_t<std::vector<Batch>> micro_batches) {
    detail::FeedOf<Batch> feed(objective, nullptr, std::move(micro_batches));
    return step_feed(feed);
  }

  /// The objective's mean loss and metrics over `batches` batches of `eval`
  /// (0: batches_per_epoch()), in eval mode under InferenceMode; `eval`'s cursor is restored
  /// afterwards, so every evaluation sees the same data.
  template <typename Batch>
  EvalResult evaluate(Objective<Batch>& objective, detail::non_deduced_t<BatchSource<Batch>>& eval,
                      int64_t batches = 0) {
    detail::FeedOf<Batch> feed(objective, &eval);
    return evaluate_feed(feed, batches);
  }

  /// Writes a checkpoint of the modules and the optimiser under `checkpoints_dir`, keeping the
  /// newest keep_checkpoints (checkpoint.h); fit() calls it, loops of their own (PPO's) too. In
  /// a data-parallel job call it on every rank: rank 0 writes it into its own `checkpoints_dir`,
  /// with each rank's ZeRO-1 share and the layout.
  std::filesystem::path save(const std::filesystem::path& checkpoints_dir, TrainingState state);

  /// The gradient seam (GradientHook); empty to remove.
  void set_gradient_hook(GradientHook hook) { gradient_hook_ = std::move(hook); }
  /// Runs after each optimizer step (StepHook); empty to remove.
  void set_step_hook(StepHook hook) { step_hook_ = std::move(hook); }

  int64_t step() const { return step_; }
  AdamW& optimizer() { return optimizer_; }
  /// The data-parallel state, or null when the process runs alone.
  DataParallel* data_parallel() { return dp_.get(); }
  /// Whether this process writes the run's files (rank 0, or alone).
  bool writes_files() const { return dp_ == nullptr || dp_->rank() == 0; }
  const std::vector<NamedModule>& modules() const { return modules_; }
  const TrainerOptions& options() const { return options_; }

 private:
  TrainResult fit_feed(detail::Feed& train, detail::Feed* eval, RunDirectory* dir);
  StepStats step_feed(detail::Feed& feed);
  EvalResult evaluate_feed(detail::Feed& feed, int64_t batches);
  void set_train_mode(bool on);
  void sync_resume(DataCursor& train);

  void reduce_step(StepStats& stats, double& loss_total, int stop);

  std::vector<NamedModule> modules_;
  TrainerOptions options_;
  AdamW optimizer_;
  std::unique_ptr<DataParallel> dp_;
  std::optional<std::filesystem::path> restored_from_;
  int64_t nonfinite_streak_ = 0;
  int64_t first_nonfinite_step_ = 0;
  bool stop_agreed_ = false;  // a stop request seen by the step's reduction (all ranks agree)
  int64_t step_ = 0;
  std::vector<std::pair<int64_t, double>> eval_history_;
  GradientHook gradient_hook_;
  StepHook step_hook_;
};

/// Mean loss and metrics of an objective over `batches` batches of `data` (0: one epoch) under
/// InferenceMode and the autocast of `options` (precision, autocast_cpu); the cursor of `data`
/// is restored afterwards. Module modes are the caller's (Trainer::evaluate switches them).
template <typename Batch>
EvalResult evaluate_objective(Objective<Batch>& objective,
                              detail::non_deduced_t<BatchSource<Batch>>& data,
                              int64_t batches = 0, const TrainerOptions& options = {});

namespace detail {
/// With `group` (data parallel), rank r computes batches r, r + w, ... and the sums are
/// all-reduced: every rank returns the mean over all the batches.
EvalResult evaluate_feed(Feed& feed, int64_t batches, const TrainerOptions& options,
                         ProcessGroup* group = nullptr);
}

template <typename Batch>
EvalResult evaluate_objective(Objective<Batch>& objective,
                              detail::non_deduced_t<BatchSource<Batch>>& data, int64_t batches,
                              const TrainerOptions& options) {
  detail::FeedOf<Batch> feed(objective, &data);
  return detail::evaluate_feed(feed, batches, options);
}

}  // namespace concord::train
