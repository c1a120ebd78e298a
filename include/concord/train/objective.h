// What the Trainer optimises, and where its batches come from. The Trainer knows neither the
// model nor the batch type: an Objective turns one micro-batch into the sum of its per-unit
// losses and the number of units that sum is normalised by, so every objective of the papers is
// the same kind of thing to the training loop:
//
//   next-token loss (pretrain, SFT)      units: target tokens    (next_token.h)
//   Bradley-Terry reward loss            units: preference pairs
//   PPO's clipped surrogate + value loss units: response tokens
//   KOALA's distillation loss            units: latents
//
// The loss of an optimizer step over micro-batches b_1..b_k is
//
//   L = (1 / N) * sum_i loss_sum(b_i),   N = sum_i count(b_i),
//
// so gradient accumulation over k micro-batches gives exactly the gradient of one k-times larger
// batch, whatever the objective. count() is asked before any forward pass, which is what lets the
// Trainer backpropagate each micro-batch already scaled by 1/N (no extra pass over gradients).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace concord::train {

/// A metric as a weighted sum, so micro-batches and evaluation batches merge exactly: the
/// reported value is sum / weight ("rewards/accuracies": correct pairs / pairs).
struct MetricSum {
  double sum = 0;
  double weight = 0;
  double value() const { return weight > 0 ? sum / weight : 0.0; }
  MetricSum& operator+=(const MetricSum& other) {
    sum += other.sum;
    weight += other.weight;
    return *this;
  }
};

/// Named metrics of a batch, a step or an evaluation (TRL's names where one exists).
using Metrics = std::map<std::string, MetricSum>;

/// Adds `from` into `into`, name by name.
inline void accumulate(Metrics& into, const Metrics& from) {
  for (const auto& [name, m] : from) into[name] += m;
}

/// One micro-batch's contribution.
struct LossSum {
  at::Tensor sum;   ///< scalar: the sum of the per-unit losses (differentiable when training)
  Metrics metrics;  ///< anything else worth logging, as weighted sums
};

/// The loss of one kind of batch. Frozen modules an objective uses (a teacher, a reference
/// policy, reward models) belong to the objective, not to the Trainer: the Trainer never puts
/// them in train mode, never hands their parameters to the optimiser and never saves them.
template <typename Batch>
class Objective {
 public:
  virtual ~Objective() = default;
  /// N of the batch: the units its loss sum is normalised by (> 0 for a batch that trains).
  virtual int64_t count(const Batch& batch) const = 0;
  /// Inputs processed, for throughput (input tokens for a language model; default: count).
  virtual int64_t inputs(const Batch& batch) const { return count(batch); }
  /// The sum of the per-unit losses of `batch`. Called under the Trainer's autocast, with
  /// gradients enabled when training and under InferenceMode when evaluating.
  virtual LossSum loss(const Batch& batch) = 0;
  /// What inputs() counts, plural: metrics.jsonl logs train/<unit> and the progress line
  /// <unit>/s ("tokens", "pairs", "latents").
  virtual std::string unit() const { return "tokens"; }
  /// The loss is a mean negative log-likelihood in nats: evaluation also logs its perplexity.
  virtual bool loss_is_nll() const { return false; }
};

/// The position of a data stream, saved in checkpoints so a resumed run reads the same batches.
class DataCursor {
 public:
  virtual ~DataCursor() = default;
  /// Batches in one pass over the data (evaluation takes at most this many).
  virtual int64_t batches_per_epoch() const = 0;
  /// The cursor (a JSON object), saved in checkpoints.
  virtual nlohmann::json state() const = 0;
  virtual void load_state(const nlohmann::json& state) = 0;
};

/// An endless stream of micro-batches of one type whose position can be saved and restored.
template <typename Batch>
class BatchSource : public DataCursor {
 public:
  virtual Batch next() = 0;
};

}  // namespace concord::train
