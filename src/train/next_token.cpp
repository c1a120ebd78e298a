#include "concord/train/next_token.h"

#include "concord/core/error.h"

namespace concord::train {

LossSum NextTokenObjective::loss(const TokenBatch& batch) {
  const c10::Device device = model_->embed->weight.device();
  const at::Tensor targets = batch.targets.to(device).reshape({-1});
  const at::Tensor hidden =
      model_->hidden_states(batch.input_ids, batch.attention_mask, nullptr, batch.position_ids,
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
  LossSum out;
  out.sum = n == 0 ? at::zeros({}, hidden.options().dtype(at::kFloat))
                   : model_->token_loss(flat, flat_targets, at::Reduction::Sum, data::kIgnoreIndex);
  return out;
}

double mean_token_loss(lm::CausalLM model, BatchSource<TokenBatch>& data, int64_t batches,
                       const TrainerOptions& options) {
  const bool was_training = model->is_training();
  model->eval();
  NextTokenObjective objective(model);
  EvalResult result;
  try {
    result = evaluate_objective(objective, data, batches, options);
  } catch (...) {
    if (was_training) model->train();
    throw;
  }
  if (was_training) model->train();
  return result.loss;
}

}  // namespace concord::train
