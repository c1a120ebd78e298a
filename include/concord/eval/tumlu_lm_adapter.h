// CausalLmTumluModel: the TumluModel (tumlu_eval.h) over a Concord lm::CausalLM and a
// text::Tokenizer, so the TUMLU driver evaluates real language models.
//
//   generate  greedy decoding with lm::generate_text: prompts batched with left padding
//             (positions from the attention mask), each row cut before its first stop string.
//   loglik    lm-evaluation-harness's loglikelihood request (lm_eval/api/model.py,
//             TemplateLM._encode_pair): the context is encoded on its own (with the tokenizer's
//             special tokens, so a BOS where the model expects one), context + continuation is
//             encoded whole and the continuation's tokens are what follows the context's tokens:
//
//               log p(c | x) = sum_t log softmax(f(x, c_<t))[c_t]
//
//             As the harness's MMLU-style tasks do (doc_to_choice ["A","B","C","D"] after a
//             prompt ending "Answer:", target_delimiter " "), the TUMLU driver asks for " A",
//             " B", ... after the prompt without its trailing space; acc = argmax log p and
//             acc_norm = argmax log p / continuation length are computed by the driver.
//
// Prefix cache. Every item of one subject shares the same five shots, so the shots run once and
// their KV cache is reused for every item and every option. The interface hands the adapter only
// whole prompts, so the shared text is found from consecutive calls: the longest common prefix of
// this prompt and the previous one, cut just after its last blank line ("\n\n", where the shots
// end). It is then tokenised on its own and used only when those tokens are exactly the first
// tokens of the whole prompt's tokenisation (a BPE merge across the cut, or a tokenizer that
// treats the cut differently, falls back to a full forward). So the cached score is the score of
// the same token sequence a full forward sees, equal up to float rounding
// (CausalLmTumluModel.PrefixCacheMatchesAFullForward).
//
// Batches. loglik_batch() takes several prompts at once (the driver sends a whole subject); their
// common text, cut after its last blank line, is the shared prefix, so even a subject's first
// items are served by the cache. Scoring is lm::score_requests (concord/lm/score.h) with that
// prefix and share_prompt: the cached items run together, longest first, up to item_batch_size
// at a time, each item's own tokens over a copy of the shots' cache; every option's first token
// is scored from the item's last state, and longer options (option texts) continue over copies
// of their item's row (CausalLmTumluModel.BatchedLoglikMatchesAFullForward). Requests the cache
// does not serve are scored by the same function without prefix, one row per option.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "concord/eval/tumlu_eval.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/score.h"
#include "concord/text/tokenizer.h"

namespace concord::eval {

struct CausalLmTumluOptions {
  /// Folder name under outputs/<protocol>/ (may hold '/').
  std::string name = "concord-lm";
  /// Prompts per forward pass in generate (0: all prompts of a call at once).
  int64_t generate_batch_size = 0;
  /// Sequences per forward pass of the full-forward (uncached) loglik path.
  int64_t score_batch_size = 8;
  /// Items per forward pass of the cached loglik path (each holds a copy of the shared cache),
  /// and option rows per pass where options have more than one token.
  int64_t item_batch_size = 16;
  /// Reuse the KV cache of the text shared by consecutive loglik prompts.
  bool prefix_cache = true;
  /// Shared prefixes shorter than this (characters) are not worth a cache.
  int64_t min_prefix_chars = 16;
};

/// Counters of the loglik path, for tests and run reports.
struct PrefixCacheStats {
  int64_t builds = 0;         ///< shared prefixes run into a fresh KV cache
  int64_t hits = 0;           ///< loglik requests (items) served from a cached prefix
  int64_t full_forwards = 0;  ///< loglik requests scored without a cache
  int64_t rejected = 0;       ///< shared prefixes whose tokens did not start the prompt's tokens
  int64_t prefix_tokens = 0;  ///< tokens of the cached prefix now held
};

class CausalLmTumluModel : public TumluModel {
 public:
  /// `model` is used as it is (device, dtype; put it in eval mode); `tokenizer` must match it.
  CausalLmTumluModel(lm::CausalLM model, std::shared_ptr<const text::Tokenizer> tokenizer,
                     CausalLmTumluOptions options = {});

  std::string name() const override { return options_.name; }
  std::vector<std::string> generate(const std::vector<std::string>& prompts,
                                    const std::vector<std::string>& stop_strings,
                                    int64_t max_new_tokens) override;
  std::vector<double> loglik(const std::string& prefix,
                             const std::vector<std::string>& continuations) override;
  std::vector<std::vector<double>> loglik_batch(const std::vector<LoglikRequest>& requests) override;

  /// Continuation token ids as the harness forms them: encode(prefix + c) after the prefix's
  /// own tokens (encode(c) alone when the whole is not longer than the prefix's tokens).
  std::vector<int64_t> continuation_tokens(const std::vector<int64_t>& prefix_ids,
                                           const std::string& prefix,
                                           const std::string& continuation) const;
  /// encode(text, add_special_tokens = true) as int64 ids.
  std::vector<int64_t> prompt_tokens(const std::string& text) const;

  const PrefixCacheStats& stats() const { return stats_; }
  /// Forgets the cached prefix (and the previous prompt).
  void reset_prefix_cache();

 private:
  struct Encoded {
    std::vector<int64_t> prefix_ids;
    std::vector<std::vector<int64_t>> continuations;
  };
  bool cache_serves(const std::string& prefix, const std::vector<int64_t>& prefix_ids) const;
  void ensure_shared_prefix(const std::vector<LoglikRequest>& requests,
                            const std::vector<Encoded>& encoded);
  /// Scores the requests `items` into `out`: after the shared prefix when `cached` (every item
  /// must be served by it), from their own tokens otherwise.
  void score_into(const std::vector<Encoded>& encoded, const std::vector<size_t>& items,
                  bool cached, std::vector<std::vector<double>>& out);

  lm::CausalLM model_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  CausalLmTumluOptions options_;
  int64_t pad_id_ = 0;

  std::string last_prefix_;
  std::string shared_text_;  ///< empty: no cache
  lm::PrefixCache shared_;   ///< the tokens of shared_text_ and their KV cache
  PrefixCacheStats stats_;
};

}  // namespace concord::eval
