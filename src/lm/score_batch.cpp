#include "score_batch.h"

#include <algorithm>

#include "concord/core/error.h"

namespace concord::lm::detail {

namespace {

c10::Device device_of(CausalLM& model) { return model->embed->weight.device(); }

}  // namespace

PaddedRows pad_rows(const std::vector<Row>& rows, PadSide side, int64_t pad_id) {
  PaddedRows out;
  const int64_t n = static_cast<int64_t>(rows.size());
  for (const Row& r : rows) out.width = std::max(out.width, r.size());
  out.ids = at::full({n, out.width}, pad_id, at::kLong);
  out.mask = at::zeros({n, out.width}, at::kLong);
  int64_t* ids = out.ids.data_ptr<int64_t>();
  int64_t* mask = out.mask.data_ptr<int64_t>();
  for (int64_t b = 0; b < n; ++b) {
    const Row& r = rows[static_cast<size_t>(b)];
    const int64_t gap = out.width - r.size();
    out.padded |= gap > 0;
    const int64_t begin = side == PadSide::left ? gap : 0;
    out.begin.push_back(begin);
    int64_t* row_ids = ids + b * out.width + begin;
    std::copy(r.head.data, r.head.data + r.head.size, row_ids);
    std::copy(r.tail.data, r.tail.data + r.tail.size, row_ids + r.head.size);
    std::fill(mask + b * out.width + begin, mask + b * out.width + begin + r.size(), int64_t{1});
  }
  out.leading_padding = out.padded && side == PadSide::left;
  return out;
}

at::Tensor run_rows(CausalLM& model, const PaddedRows& rows, nn::KVCache* cache,
                    const at::Tensor& past_mask) {
  const c10::Device device = device_of(model);
  const int64_t n = rows.ids.size(0);
  const int64_t past = cache != nullptr ? cache->length() : 0;
  at::Tensor mask;
  if (rows.leading_padding || past_mask.defined()) {
    at::Tensor before = past_mask;
    if (!before.defined()) before = at::ones({n, past}, at::kLong);
    TORCH_INTERNAL_ASSERT(before.size(0) == n && before.size(1) == past);
    mask = at::cat({before.to(at::kLong).cpu(), rows.mask}, 1).to(device);
  }
  return model->hidden_states(rows.ids.to(device), mask, cache);
}

at::Tensor pick_logprobs(CausalLM& model, const at::Tensor& states, const at::Tensor& rows,
                         const at::Tensor& targets, at::Tensor* greedy) {
  const c10::Device device = states.device();
  // fp32 at least: half-precision logits are widened, a double model keeps its precision.
  const at::Tensor logits = model->logits(states);
  const at::Tensor logp = at::log_softmax(
      logits.scalar_type() == at::kDouble ? logits : logits.to(at::kFloat), -1);  // [M, V]
  const at::Tensor target = targets.to(device).to(at::kLong);
  at::Tensor lp;
  if (rows.defined()) {
    // Element (rows[k], targets[k]) of the [M, V] matrix, read through its flat view.
    const at::Tensor row = rows.to(device).to(at::kLong);
    lp = logp.reshape({-1}).index_select(0, row * logp.size(1) + target);
  } else {
    TORCH_INTERNAL_ASSERT(target.size(0) == logp.size(0));
    lp = logp.gather(1, target.unsqueeze(1)).squeeze(1);
  }
  if (greedy != nullptr) {
    at::Tensor top = logp.argmax(-1);
    if (rows.defined()) top = top.index_select(0, rows.to(device).to(at::kLong));
    *greedy = (top == target).cpu();
  }
  return lp;
}

at::Tensor score_pair_rows(CausalLM& model, const std::vector<Row>& rows, int64_t pad_id,
                           const PrefixCache* prefix, at::Tensor* greedy) {
  const PaddedRows batch = pad_rows(rows, PadSide::right, pad_id);
  const int64_t n = static_cast<int64_t>(rows.size());
  nn::KVCache cache;
  if (prefix != nullptr) {
    // A copy (index_select builds new buffers), one row per pair; the prefix stays as it was.
    cache = prefix->cache;
    cache.select_rows(at::zeros({n}, at::TensorOptions().dtype(at::kLong).device(device_of(model))));
    cache.reserve(prefix->length() + batch.width);
  }
  const at::Tensor hidden = run_rows(model, batch, prefix != nullptr ? &cache : nullptr, {});
  // Column begin + |p| - 1 + t holds the state that predicts continuation token t.
  std::vector<int64_t> picks, targets;
  for (int64_t b = 0; b < n; ++b) {
    const Row& r = rows[static_cast<size_t>(b)];
    const int64_t first = b * batch.width + batch.begin[static_cast<size_t>(b)] + r.head.size - 1;
    for (int64_t t = 0; t < r.tail.size; ++t) {
      picks.push_back(first + t);
      targets.push_back(r.tail.data[t]);
    }
  }
  const at::Tensor index = at::tensor(picks, at::kLong).to(hidden.device());
  const at::Tensor states = hidden.reshape({n * batch.width, hidden.size(2)}).index_select(0, index);
  return pick_logprobs(model, states, {}, at::tensor(targets, at::kLong), greedy);
}

bool window_in_reach(const CausalLM& model, int64_t longest_row) {
  return model->config.sliding_window > 0 && longest_row > model->config.sliding_window;
}

bool carries_state(const CausalLM& model) {
  return model->config.siaf_terms > 0 && model->config.siaf_neighbour_kernel > 1;
}

}  // namespace concord::lm::detail
