// Internal to the scorer (concord/lm/score.h): the padding, masks, picked positions and
// log-softmax that every layout of score_requests, continuation_logprobs and token_logprobs
// shares. Nothing else in the library builds scoring batches by hand.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "concord/lm/causal_lm.h"
#include "concord/lm/score.h"
#include "concord/nn/kv_cache.h"

namespace concord::lm::detail {

/// A run of token ids, not owned.
struct Span {
  const int64_t* data = nullptr;
  int64_t size = 0;
};
/// ids[0, ids.size() - drop_back).
inline Span span_of(const std::vector<int64_t>& ids, int64_t drop_back = 0) {
  return {ids.data(), static_cast<int64_t>(ids.size()) - drop_back};
}

/// One row of a batch: `head` then `tail` (a prompt and its continuation, or one part alone).
struct Row {
  Span head, tail;
  int64_t size() const { return head.size + tail.size; }
};

enum class PadSide { left, right };

/// Rows laid out as one [R, W] batch, W the longest row: row r's tokens fill columns
/// [begin[r], begin[r] + size) and padding the rest (on the right or on the left).
struct PaddedRows {
  at::Tensor ids;   ///< [R, W] int64, CPU
  at::Tensor mask;  ///< [R, W] int64, 1 at tokens, CPU
  std::vector<int64_t> begin;
  int64_t width = 0;
  bool padded = false;           ///< some row is shorter than W
  bool leading_padding = false;  ///< padding precedes a real token (left-padded, padded)
};
PaddedRows pad_rows(const std::vector<Row>& rows, PadSide side, int64_t pad_id);

/// Final hidden states [R, W, d] of `rows` run after `cache` (nullptr: no cache; otherwise it
/// holds `past` positions for each of the R rows, and the rows are appended to it).
/// `past_mask` [R, past] marks which cached positions are tokens (undefined: all). An attention
/// mask goes to the model only when padding precedes a real token somewhere, so batches whose
/// padding all trails take the plain causal attention.
at::Tensor run_rows(CausalLM& model, const PaddedRows& rows, nn::KVCache* cache,
                    const at::Tensor& past_mask);

/// The scored log-probs: log softmax(head(states[rows[k]]))[targets[k]] in fp32 (fp64 for a
/// double model), [K] on the states' device (differentiable). `states` [M, d] are the positions that predict; `rows`
/// (int64 [K], optional) lets several targets share one state (each state then goes through the
/// head once); undefined rows means K = M, target k read from state k. `greedy` (optional)
/// receives [K] bool on the CPU: whether each target is its state's argmax.
at::Tensor pick_logprobs(CausalLM& model, const at::Tensor& states, const at::Tensor& rows,
                         const at::Tensor& targets, at::Tensor* greedy = nullptr);

/// The plain layout: rows (prompt, continuation) right-padded into one batch, after `prefix`
/// (optional: every row then starts from a copy of its cache). Returns log p of every
/// continuation token, row by row and in order, [K] (differentiable unless the caller runs
/// under InferenceMode); `greedy` as in pick_logprobs.
at::Tensor score_pair_rows(CausalLM& model, const std::vector<Row>& rows, int64_t pad_id,
                           const PrefixCache* prefix, at::Tensor* greedy = nullptr);

/// Whether a sliding window of attention is within reach of rows of `longest_row` positions:
/// the window counts columns, so padding inside a row would move keys in or out of it.
bool window_in_reach(const CausalLM& model, int64_t longest_row);

/// Whether the model's cache carries a recurrent state besides keys and values: SIAF's neighbour
/// convolution keeps the last columns' inputs, so padding before a cache's end becomes the
/// context of the next tokens.
bool carries_state(const CausalLM& model);

}  // namespace concord::lm::detail
