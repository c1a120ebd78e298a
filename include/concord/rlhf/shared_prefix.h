// Preference pairs laid out so that each pair's common prefix runs once.
//
// The chosen and the rejected sequence of a pair share their prompt token for token, and a
// causal model's hidden states on those tokens do not depend on what follows them. So the
// prefix can run once, its keys and values be copied to both rows, and only the two
// continuations run separately:
//
//   pass 1: prefix p_b = x_b[0, s_b)            [B, S]   left-padded, into a KV cache
//   pass 2: continuations y_c[s_b..], y_r[s_b..] [2B, R]  right-padded, attending to the cache
//
// with s_b at most the length of the longest common prefix of the two token rows (not the
// prompt length the data records: a tokenizer may merge across the prompt's end, and responses
// that begin alike share more), and one token short of the shorter row, so every continuation
// holds at least its last token, where the reward is read.
//
// Both passes compute their padding, so one pair with a short prefix would widen every
// continuation: the prefix width S is the one that minimises the token slots B S + 2B R, and
// pair b shares s_b = min(its common prefix, S). Prefixes are left-padded and continuations
// follow them directly, so no padding lies between two real tokens of a row: sliding-window
// attention (which counts columns) and PanGu-pi's SIAF convolution state (the last columns'
// inputs) see what they see in the full row. Positions come from the attention mask (cumsum - 1),
// so every token keeps its position; the backward pass sums both rows' gradients into the
// prefix. The result equals running the 2B full rows up to floating-point summation order, with
// sum_b s_b fewer tokens through the model: up to half the work, on preference data whose
// prompts are long (summarisation, multi-turn dialogue).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <ATen/ATen.h>

#include "concord/data/preference.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/repeated_prefix.h"
#include "concord/nn/kv_cache.h"

namespace concord::rlhf {

/// The share of the stacked rows' token slots (padding included) that the layout must save
/// before the objectives run it, for the reasons of lm::kMinSharedFraction.
using lm::kMinSharedFraction;

/// kMinSharedFraction as the `share_prefixes` options' help prints it: "10%".
std::string min_shared_fraction_text();

class SharedPrefixPairs {
 public:
  /// The layout of B pairs from right-padded rows: chosen ids and mask [B, Tc], rejected
  /// [B, Tr] (int64, on the CPU: collated batches are). `pad_id` fills the padding.
  /// `max_shared` ([B] int64, optional) caps each pair's s_b: DPO scores the response tokens,
  /// each from the state before it, so it shares at most the prompt less its last token.
  static SharedPrefixPairs build(const at::Tensor& chosen_ids, const at::Tensor& chosen_mask,
                                 const at::Tensor& rejected_ids, const at::Tensor& rejected_mask,
                                 int64_t pad_id, const at::Tensor& max_shared = {});

  /// The pairs `index` ([n] int64) of this layout, laid out again.
  SharedPrefixPairs subset(const at::Tensor& index) const;

  int64_t pairs() const { return chosen_ids_.size(0); }
  /// S: the longest shared prefix (0: no pair shares a token; pass 1 is then skipped).
  int64_t prefix_length() const { return prefix_ids.size(1); }
  /// sum_b s_b: the tokens run once instead of twice.
  int64_t shared_tokens() const { return shared_tokens_; }
  /// Real tokens of the 2B full rows.
  int64_t row_tokens() const { return row_tokens_; }
  /// Token slots the two passes compute, padding included: B S + 2B R.
  int64_t computed_tokens() const { return computed_tokens_; }
  /// Token slots of the 2B rows stacked and right-padded to the longest: 2B T.
  int64_t stacked_tokens() const { return stacked_tokens_; }
  /// Saves at least kMinSharedFraction of stacked_tokens().
  bool pays() const;

  at::Tensor prefix_ids, prefix_mask;  ///< [B, S], left-padded
  at::Tensor continuation_ids;         ///< [2B, R], right-padded, chosen rows first
  /// [2B, S + R]: the pair's prefix mask, then the continuation's (what pass 2's attention and
  /// positions read: the cache holds the prefix).
  at::Tensor attention_mask;
  at::Tensor last_index;  ///< [2B] int64: each continuation's last real column
  at::Tensor shared;      ///< [B] int64: s_b, the tokens of pair b in pass 1

 private:
  at::Tensor chosen_ids_, chosen_mask_, rejected_ids_, rejected_mask_, max_shared_;
  int64_t pad_id_ = 0;
  int64_t shared_tokens_ = 0;
  int64_t row_tokens_ = 0;
  int64_t computed_tokens_ = 0;
  int64_t stacked_tokens_ = 0;
};

/// A collated batch's pairs in the layout (build() on its rows), or nullopt when `enabled` is
/// false or the layout does not pay().
std::optional<SharedPrefixPairs> shared_prefix_layout(const data::PreferenceBatch& batch,
                                                      int64_t pad_id, bool enabled = true,
                                                      const at::Tensor& max_shared = {});

/// Pass 1 through `model` (autograd as the caller has it): the prefixes' keys and values (and
/// any recurrent layer state) in a cache of 2B rows, row b and row B + b both pair b's, which
/// pass 2 reads with `continuation_ids` and `attention_mask`. Needs prefix_length() > 0.
nn::KVCache encode_prefixes(lm::CausalLM model, const SharedPrefixPairs& pairs);

/// Both passes: the final hidden states of the continuations [2B, R, d] (at prefix_length() 0,
/// the continuations alone, which are then the full rows).
at::Tensor continuation_hidden_states(lm::CausalLM model, const SharedPrefixPairs& pairs);

}  // namespace concord::rlhf
