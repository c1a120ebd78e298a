#include "concord/train/batch.h"

namespace concord::train {

int64_t TokenBatch::target_tokens() const {
  return targets.ne(data::kIgnoreIndex).sum().item<int64_t>();
}

TokenBatch to_token_batch(const data::LmBatch& batch) {
  TokenBatch out;
  out.input_ids = batch.input_ids;
  out.targets = batch.targets;
  return out;
}

TokenBatch to_token_batch(const data::SftBatch& batch) {
  TokenBatch out;
  out.input_ids = batch.input_ids;
  out.targets = batch.targets;
  if (batch.segment_ids.defined() && batch.segment_ids.numel() > 0 &&
      batch.segment_ids.max().item<int64_t>() > 1) {
    out.segment_ids = batch.segment_ids;
    out.position_ids = batch.position_ids;
  }
  return out;
}

}  // namespace concord::train
