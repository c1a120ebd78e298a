// Log-probability scoring of continuations given prompts: the quantity GRAPE ranks responses by
// (its length-normalised mean), TUMLU's log-likelihood protocol compares choices with, and a
// training objective (reward models, PPO) differentiates:
//
//   log p(c | p) = sum_{t=1..|c|} log softmax(f(p, c_<t))[c_t]
//
// where f(p, c_<t) is the model's final hidden state at the last token of p + c_<t, through the
// LM head. This is the library's one scorer: grape_score, the TUMLU adapter's loglik, score_texts
// and continuation_logprobs all run through the batch building and the log-softmax below.
//
// A request is one prompt with one or more continuations. Two layouts give the same scores (to
// float rounding; tested):
// - plain (default): every (prompt, continuation) pair is a row; rows are sorted by length,
//   longest first, and run right-padded in batches of `batch_size`.
// - share_prompt: requests are taken in chunks (prompts of similar length, longest first, at most
//   `batch_size` prompts and 4 * batch_size continuations). A chunk's prompts run once, as one
//   batch, into a KV cache; the first token of every continuation is scored from the prompt's
//   last state; the rest of the continuations run, longest first in batches of `batch_size`, over
//   copies of the cache rows of their prompts. A request with k continuations costs one prompt
//   pass, not k.
// Either layout can start every request from a PrefixCache: tokens that precede every prompt
// (TUMLU's few-shot examples), run once into a KV cache of one row and copied into each batch.
//
// Only the positions that predict continuation tokens go through the LM head (a [N, V] matrix,
// never [B, T, V]); the log-softmax is taken in fp32 (fp64 for a double model). Padding positions are never attended by a
// real token: trailing padding needs no mask (a causal model never looks ahead), so a batch
// passes an attention mask only when padding precedes a real token.
//
// Where padding goes. Prompts are right-padded, so a prompt pass needs no mask. Two kinds of
// model see a token's column and not only its position: sliding-window attention within reach
// (the window counts columns, so padding between a prompt and its continuation would move keys
// out of it) and PanGu-pi's SIAF neighbour convolution (its cache state is the last columns'
// inputs, and it would carry the prompt's padding into the continuation). For those, prompts
// are left-padded: padding before every real token changes no distance between real tokens,
// and the convolution zeroes it, which is exactly the zeros a sequence starts from. After a
// prefix, whose end must meet every prompt, their chunks hold prompts of one length, so no row
// has padding inside it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/lm/causal_lm.h"
#include "concord/nn/kv_cache.h"
#include "concord/text/tokenizer.h"

namespace concord::lm {

struct ContinuationScore {
  std::vector<double> token_logprobs;  ///< log p(c_t | p, c_<t), one per continuation token
  double sum = 0.0;                    ///< their sum: log p(c | p)
  double mean = 0.0;                   ///< sum / |c| (0 for an empty continuation)
  /// Every c_t was the argmax (lm-eval-harness "is_greedy"); found only with
  /// ScoreOptions::greedy, false otherwise.
  bool greedy = false;
};

/// One prompt and the continuations scored after it (token ids).
struct ScoreRequest {
  /// The context; non-empty (its last token predicts each continuation's first token).
  std::vector<int64_t> prompt;
  /// Scored after the prompt, each on its own; an empty one scores 0.
  std::vector<std::vector<int64_t>> continuations;
};

/// Tokens that precede every prompt of a score_requests call, already run into a KV cache of
/// one row (encode_prefix). The cache is only read: every batch works on a copy of it.
struct PrefixCache {
  std::vector<int64_t> tokens;
  nn::KVCache cache;

  int64_t length() const { return static_cast<int64_t>(tokens.size()); }
  bool empty() const { return tokens.empty(); }
};

/// Runs `tokens` (non-empty) through the model into a fresh cache, under InferenceMode. The
/// cache's buffers get `room` positions beyond the prefix, so the copies made for each batch take
/// the prompts without growing (a regrowth copies every cached position once more).
PrefixCache encode_prefix(CausalLM model, std::vector<int64_t> tokens, int64_t room = 256);

struct ScoreOptions {
  /// Rows per forward pass: pairs (plain), prompts of a chunk and continuation rows (share_prompt).
  int64_t batch_size = 8;
  /// Id written at padding positions (never attended, never scored).
  int64_t pad_token_id = 0;
  /// Run each request's prompt once into a KV cache and its continuations over copies of it.
  bool share_prompt = false;
  /// Fill ContinuationScore::greedy: one more pass over the [N, V] log-probs (an argmax), about
  /// 4% of GRAPE's scoring time on a small model with a 50k vocabulary, so it is asked for.
  bool greedy = false;
};

/// Scores every continuation of every request: out[i][k] is requests[i].continuations[k].
/// `prefix` (optional, from encode_prefix on this model) precedes every prompt. Runs under
/// InferenceMode; the model is used as it is (put it in eval mode).
std::vector<std::vector<ContinuationScore>> score_requests(
    CausalLM model, const std::vector<ScoreRequest>& requests, const ScoreOptions& options = {},
    const PrefixCache* prefix = nullptr);

/// Scores continuations[i] after prompts[i]: score_requests with one request per pair.
std::vector<ContinuationScore> score_continuations(
    CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<std::vector<int64_t>>& continuations, const ScoreOptions& options = {});

/// Tokenises prompt and continuation separately (the prompt with the tokenizer's special
/// tokens, so a BOS is added where the model expects one) and scores the pair.
std::vector<ContinuationScore> score_texts(CausalLM model, const text::Tokenizer& tokenizer,
                                           const std::vector<std::string>& prompts,
                                           const std::vector<std::string>& continuations,
                                           const ScoreOptions& options = {});

/// Per-token log-probs of continuations, differentiable (what a training objective needs):
/// logprobs[r, t] = log p(c_t | p, c_<t) of row r = (prompts[r], continuations[r]), fp32 (fp64
/// for a double model) [R, Tc] with Tc the longest continuation, 0 past each row's end; mask[r, t] is 1 where a
/// token is (fp32). All rows run as one right-padded batch, built and scored by the same code
/// as score_requests' plain layout, with autograd on unless the caller turned it off.
struct ContinuationLogprobs {
  at::Tensor logprobs;  ///< [R, Tc], on the model's device
  at::Tensor mask;      ///< [R, Tc]
};
ContinuationLogprobs continuation_logprobs(CausalLM model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const std::vector<std::vector<int64_t>>& continuations,
                                           int64_t pad_token_id = 0);

/// Per-token log-probs of a batch already laid out as tensors: out[b, t] = log p(input_ids[b,
/// t+1] | input_ids[b, <= t]) for t < T-1, [B, T-1]; only positions where `target_mask[b, t+1]`
/// is non-zero are scored, the others hold 0 (undefined target_mask: every position).
/// `attention_mask` [B, T] marks real tokens. Differentiable when called with grad enabled.
/// With `cache`, input_ids continue the cached tokens (attention_mask is then [B, past + T], as
/// for CausalLM::forward) and are appended to it; the first input token is still not scored.
at::Tensor token_logprobs(CausalLM model, const at::Tensor& input_ids,
                          const at::Tensor& attention_mask, const at::Tensor& target_mask,
                          nn::KVCache* cache = nullptr);

}  // namespace concord::lm
