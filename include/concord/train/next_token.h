// The next-token objective of pretraining and SFT: the cross-entropy of a causal LM's next-token
// predictions, summed over the target tokens of a batch (objective.h normalises it by the step's
// target tokens N):
//
//   loss_sum(b) = sum_{(r,t): y_rt != -100} -log softmax(f(x_r)_t)[y_rt]
//
// Only positions with a target go through the LM head (for SFT that skips every prompt token's
// [V] logits), and the head and the loss run as one op (ops::linear_cross_entropy): on CPU the
// [n, V] logits are never materialised.
#pragma once
#include <cstdint>

#include "concord/lm/causal_lm.h"
#include "concord/train/batch.h"
#include "concord/train/objective.h"
#include "concord/train/trainer.h"

namespace concord::train {

class NextTokenObjective final : public Objective<TokenBatch> {
 public:
  explicit NextTokenObjective(lm::CausalLM model) : model_(std::move(model)) {}
  int64_t count(const TokenBatch& batch) const override { return batch.target_tokens(); }
  int64_t inputs(const TokenBatch& batch) const override { return batch.input_ids.numel(); }
  LossSum loss(const TokenBatch& batch) override;
  bool loss_is_nll() const override { return true; }

 private:
  lm::CausalLM model_;
};

/// Mean next-token loss of a model on data (inference mode, the model in eval mode and then
/// back in its former mode), the number every evaluation of a language model reports.
double mean_token_loss(lm::CausalLM model, BatchSource<TokenBatch>& data, int64_t batches = 0,
                       const TrainerOptions& options = {});

}  // namespace concord::train
