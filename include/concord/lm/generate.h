// Text generation with a CausalLM: greedy decoding or sampling (temperature, top-k, nucleus /
// top-p of Holtzman et al., arXiv 1904.09751), stopping at stop token ids, stop strings or a
// length limit. Prompts of different lengths are batched with left padding (positions come
// from the attention mask, as transformers' generate() makes them), the prompt runs once, and
// each new token runs alone against the KV cache. The logits processors follow transformers'
// order: temperature, then top-k, then top-p.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "concord/core/options.h"
#include "concord/lm/causal_lm.h"
#include "concord/text/tokenizer.h"

namespace concord::lm {

struct GenerationOptions {
  /// Most tokens to add to each prompt.
  int64_t max_new_tokens = 32;
  /// false: greedy (argmax); true: sample from the processed distribution.
  bool do_sample = false;
  /// Divides the logits before sampling (> 0).
  double temperature = 1.0;
  /// Keep only the k most likely tokens (0: all).
  int64_t top_k = 0;
  /// Keep the smallest set of most likely tokens whose probability reaches top_p (1: all).
  double top_p = 1.0;
  /// A row finishes when it emits one of these (the token is kept in its output ids). Empty:
  /// the model config's eos_token_id, if any.
  std::vector<int64_t> stop_token_ids;
  /// A row finishes once its decoded continuation contains one of these (needs a tokenizer);
  /// the returned text ends before the stop string.
  std::vector<std::string> stop_strings;
  /// Id used for left padding (and appended to finished rows). Empty: the config's
  /// pad_token_id, else its eos_token_id, else 0.
  std::optional<int64_t> pad_token_id;
  /// Seed of the sampling generator.
  uint64_t seed = 0;
  /// Prompts per forward pass (0: all at once).
  int64_t batch_size = 0;
  /// Rows that repeat a prompt (GRPO's samples of one prompt, best-of-n) run its tokens once
  /// and share their keys and values (concord/lm/repeated_prefix.h), where that saves
  /// kMinSharedFraction of the prompt pass. The samples are the same either way, up to
  /// floating-point summation order.
  bool share_prompts = true;

  /// Every key of generation_options_schema().
  nlohmann::json to_json() const;
  /// A "generation" config section; errors are ConfigErrors naming `source` and the key.
  static GenerationOptions from_json(const nlohmann::json& json,
                                     const std::string& source = "generation options");
};

/// The keys of GenerationOptions, declared once with their ranges (temperature > 0, top_p in
/// (0, 1], top_k, max_new_tokens and batch_size >= 0). generate() holds its options to them.
const OptionsSchema<GenerationOptions>& generation_options_schema();

struct Generation {
  std::vector<int64_t> tokens;  ///< new tokens only (a stop token included)
  std::string text;             ///< decoded new tokens (with a tokenizer), cut at a stop
  std::string finish_reason;    ///< "stop_token", "stop_string" or "length"
};

/// Continues every prompt (token ids, each non-empty). `tokenizer` is needed for stop strings
/// and to fill Generation::text; may be null otherwise. Runs under InferenceMode. Options
/// outside their ranges are ConfigErrors; a LibTorch error inside is a TorchError.
std::vector<Generation> generate(CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& options,
                                 const text::Tokenizer* tokenizer = nullptr);

/// Encodes the prompts (with the tokenizer's special tokens) and generates.
std::vector<Generation> generate_text(CausalLM model, const text::Tokenizer& tokenizer,
                                      const std::vector<std::string>& prompts,
                                      const GenerationOptions& options);

/// The logits processors and the choice of one token per row, on [B, V] logits: argmax when
/// !options.do_sample, else temperature, top-k, top-p and a draw with `generator`.
at::Tensor select_next_tokens(const at::Tensor& logits, const GenerationOptions& options,
                              at::Generator& generator);

/// The processed logits [B, V] (fp32, on the logits' device) that sampling draws from:
/// logits / temperature, then top-k, then top-p (removed tokens at -inf).
at::Tensor warp_logits(const at::Tensor& logits, const GenerationOptions& options);

/// Sampled continuations kept as tensors on the model's device, for RL rollouts (PPO, GRPO):
/// nothing goes back to the host per token but, every `sync_every` steps, whether all rows
/// have stopped.
struct SampledBatch {
  at::Tensor sequences;       ///< [B, P + R] int64: the prompts as given, then the new tokens
  at::Tensor attention_mask;  ///< [B, P + R]: the prompt mask, then response_mask
  at::Tensor response;        ///< [B, R] int64: new tokens (pad after a row's stop token)
  at::Tensor response_mask;   ///< [B, R] int64: 1 up to and including the stop token
  /// [B, R] fp32: log p(token) of each sampled token under the temperature-scaled
  /// distribution, log_softmax(logits / temperature) (the distribution PPO's ratio is taken
  /// under, as in TRL; top-k and top-p only restrict the draw); 0 after the stop.
  at::Tensor logprobs;
};

/// Continues left-padded prompts `prompt_ids` [B, P] (mask `prompt_mask` [B, P], undefined: no
/// padding) by up to options.max_new_tokens tokens, under InferenceMode. R is the number of
/// steps run (fewer than max_new_tokens when every row stopped early). Stop strings are not
/// supported here (they need the host). `generator`: undefined = a CPU generator seeded with
/// options.seed on the CPU, the device's default generator elsewhere.
SampledBatch generate_tensors(CausalLM model, const at::Tensor& prompt_ids,
                              const at::Tensor& prompt_mask, const GenerationOptions& options,
                              at::Generator generator = {}, int64_t sync_every = 8);

}  // namespace concord::lm
