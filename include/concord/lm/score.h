// Log-probability scoring of continuations given prompts, the quantity GRAPE ranks responses by
// (length-normalised log-likelihood) and TUMLU's log-likelihood protocol compares choices with:
//
//   log p(c | p) = sum_{t=1..|c|} log softmax(f(p, c_<t))[c_t]
//
// Requests are sorted by length and batched with right padding; only the positions that
// predict continuation tokens go through the LM head (a [N, V] matrix, not [B, T, V]), under
// InferenceMode.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "concord/lm/causal_lm.h"
#include "concord/text/tokenizer.h"

namespace concord::lm {

struct ContinuationScore {
  std::vector<double> token_logprobs;  ///< log p(c_t | p, c_<t), one per continuation token
  double sum = 0.0;                    ///< their sum: log p(c | p)
  double mean = 0.0;                   ///< sum / |c| (0 for an empty continuation)
  bool greedy = true;                  ///< every c_t was the argmax (lm-eval-harness "is_greedy")
};

struct ScoreOptions {
  /// Sequences per forward pass.
  int64_t batch_size = 8;
  /// Id written at padding positions (never attended, never scored).
  int64_t pad_token_id = 0;
};

/// Scores continuations[i] after prompts[i] (token ids; every prompt non-empty).
std::vector<ContinuationScore> score_continuations(
    CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<std::vector<int64_t>>& continuations, const ScoreOptions& options = {});

/// Tokenises prompt and continuation separately (the prompt with the tokenizer's special
/// tokens, so a BOS is added where the model expects one) and scores the pair.
std::vector<ContinuationScore> score_texts(CausalLM model, const text::Tokenizer& tokenizer,
                                           const std::vector<std::string>& prompts,
                                           const std::vector<std::string>& continuations,
                                           const ScoreOptions& options = {});

/// Per-token log-probs of a batch: out[b, t] = log p(input_ids[b, t+1] | input_ids[b, <= t])
/// for t < T-1, [B, T-1]; positions where `target_mask[b, t+1]` is 0 hold 0. `attention_mask`
/// [B, T] marks real tokens. Differentiable when called with grad enabled (training uses it).
at::Tensor token_logprobs(CausalLM model, const at::Tensor& input_ids,
                          const at::Tensor& attention_mask, const at::Tensor& target_mask);

}  // namespace concord::lm
