// The training loop shared by pretraining and SFT (and, later, reward models): next-token
// cross-entropy averaged over the target tokens of an optimizer step,
//
//   L = (1 / N) * sum_{micro-batches} sum_{(b,t): y_bt != -100} -log softmax(f(x)_bt)[y_bt]
//
// with N the target tokens of all micro-batches of the step, so gradient accumulation over k
// micro-batches gives exactly the gradient of one k-times larger batch. Then global-norm
// gradient clipping, AdamW (adamw.h) at the rate of the schedule (lr_schedule.h), periodic
// evaluation, checkpoints (checkpoint.h), metrics.jsonl and the progress line.
//
// Resuming from a checkpoint restores weights, optimizer, RNG, step and the data cursor; on CPU
// the resumed run ends with bit-for-bit the weights of an uninterrupted run (tests/train).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/config.h"
#include "concord/core/report.h"
#include "concord/lm/causal_lm.h"
#include "concord/train/adamw.h"
#include "concord/train/batch.h"
#include "concord/train/lr_schedule.h"

namespace concord::train {

struct TrainerOptions {
  int64_t max_steps = 100;        ///< optimizer steps
  int64_t grad_accum_steps = 1;   ///< micro-batches per optimizer step
  double max_grad_norm = 1.0;     ///< global-norm clipping; 0 turns it off
  AdamWOptions optimizer;
  std::string lr_schedule = "cosine";
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.1;
  std::string precision = "fp32"; ///< fp32, or bf16 (autocast on CUDA; CPU runs stay fp32)
  int64_t eval_every = 0;         ///< steps between evaluations (0: only at the end)
  int64_t eval_batches = 0;       ///< batches per evaluation (0: one pass over the eval data)
  int64_t checkpoint_every = 0;   ///< steps between checkpoints (0: only at the end)
  int64_t keep_checkpoints = 2;   ///< newest checkpoints kept (0: all)
  bool progress = true;           ///< the per-step progress line on stderr

  /// The schedule these options describe.
  LrScheduleOptions schedule() const;
  void validate() const;
  nlohmann::json to_json() const;
  /// Reads a resolved `train` section (train_schema()).
  static TrainerOptions from_json(const nlohmann::json& train);
};

/// The keys of a run config's `train` section, with their defaults.
ConfigSchema train_schema();

struct StepStats {
  double loss = 0;          ///< mean token loss of the step
  double grad_norm = 0;     ///< before clipping
  double lr = 0;
  int64_t tokens = 0;       ///< input tokens of the step
  int64_t target_tokens = 0;
};

struct TrainResult {
  int64_t steps = 0;                                   ///< final step
  double final_loss = 0;                               ///< training loss of the last step
  std::optional<double> final_eval_loss;
  std::vector<std::pair<int64_t, double>> train_loss;  ///< (step, loss) of the steps run here
  std::vector<std::pair<int64_t, double>> eval_loss;   ///< (step, loss), whole run
  int64_t tokens = 0;                                  ///< input tokens of the steps run here
  double seconds = 0;                                  ///< wall time of the steps run here
  std::optional<std::filesystem::path> last_checkpoint;
};

class Trainer {
 public:
  /// Trains `model` in place (it is put in train mode; its parameters are optimised).
  Trainer(lm::CausalLM model, TrainerOptions options);

  /// Restores the model, optimizer, RNG, step and `train`'s cursor from a checkpoint folder.
  void restore(const std::filesystem::path& checkpoint, BatchSource& train);

  /// Runs from the current step to max_steps. With `dir`: metrics.jsonl (train/loss,
  /// train/grad_norm, train/learning_rate, eval/loss, ...) and checkpoints in dir/checkpoints.
  TrainResult fit(BatchSource& train, BatchSource* eval = nullptr, RunDirectory* dir = nullptr);

  /// One optimizer step over these micro-batches.
  StepStats train_step(const std::vector<TrainBatch>& micro_batches);

  /// Mean token loss over `batches` batches of `eval` (0: batches_per_epoch()), without
  /// gradients; `eval`'s cursor is restored afterwards, so every evaluation sees the same data.
  double evaluate(BatchSource& eval, int64_t batches = 0);

  int64_t step() const { return step_; }
  AdamW& optimizer() { return optimizer_; }
  lm::CausalLM model() const { return model_; }
  const TrainerOptions& options() const { return options_; }

 private:
  // Sum of token losses and the number of target tokens of one micro-batch.
  std::pair<at::Tensor, int64_t> loss_sum(const TrainBatch& batch);
  lm::CausalLM model_;
  TrainerOptions options_;
  AdamW optimizer_;
  int64_t step_ = 0;
  std::vector<std::pair<int64_t, double>> eval_history_;
};

/// Mean next-token loss of a model on data (inference mode), the number every eval reports.
double mean_token_loss(lm::CausalLM model, BatchSource& data, int64_t batches = 0,
                       bool autocast = false);

}  // namespace concord::train
