// GRAPE scoring ("The Best Instruction-Tuning Data are Those That Fit", Zhang, Dai and Peng,
// arXiv 2502.04194, the method section): every candidate response y of an instruction x is scored by the
// target base model's length-normalised log-probability,
//
//   s(x, y) = (1 / |y|) * sum_{t=1..|y|} log p(y_t | template(x), y_<t),
//
// the mean over the response tokens only (the prompt is context, never scored). GRAPE then keeps,
// per instruction, the candidate the model finds most probable (select.h).
//
// How the scores are computed:
// - The template is a format string with "{instruction}" (the paper's "Question: {x}\nAnswer: "
//   by default; the prompt is tokenised with the tokenizer's special tokens, the response
//   without, each on its own, as lm::score_texts does), or the name of a chat template
//   (data/chat_template.h: plain, chatml, llama2). With a chat template the scored tokens are
//   exactly the ones the `sft` task trains on for that pair (the assistant turn, its EOS
//   included), so the score measures the loss SFT will start from.
// - Candidates whose prompt + response exceed the context (max_length) are skipped and counted:
//   cutting them would bias the mean towards their first tokens. Empty responses (no tokens)
//   are skipped and counted too: their mean is undefined.
// - Identical candidates of one instruction (same response text) are scored once; the others
//   take the score and are counted as deduplicated.
// - The log-probs come from lm::score_requests (concord/lm/score.h), one request per pool (its
//   prompt and the responses that run), under InferenceMode; only the positions that predict
//   response tokens go through the LM head. With share_prompt (default), pools are taken in
//   chunks of similar prompt length (at most batch_size prompts and about 4 batches of
//   responses): a chunk's prompts run once into a KV cache, and its responses run in
//   length-sorted batches over copies of the cache rows they need, so a pool of k responses
//   costs one prompt pass, not k. Without it, each (prompt, response) pair is a row,
//   length-sorted across all pools: more FLOPs, but no attention over padded prompt keys, which
//   wins when the LM head dominates (small models with large vocabularies; docs/benchmarks.md).
//   Both give the same scores (tested).
// - Sharding: rank r of w scores pools r, r + w, r + 2w, ... (launched the way torchrun launches
//   processes; core/shard.h holds the protocol); each rank writes its part with write_score_file,
//   and merge_score_files puts the parts back into pool order, checking that every pool is there
//   exactly once.
#pragma once
#include <cstdint>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/data/chat_template.h"
#include "concord/data/records.h"
#include "concord/lm/causal_lm.h"
#include "concord/text/tokenizer.h"

namespace concord::grape {

/// The paper's plain template for base models: "Question: {x}\nAnswer: ".
inline constexpr const char* kPaperTemplate = "Question: {instruction}\nAnswer: ";

/// Why a candidate has no score.
enum class CandidateStatus {
  scored,    ///< scored (or took the score of an identical candidate)
  too_long,  ///< prompt + response tokens exceed max_length
  empty,     ///< the response has no tokens
};
/// "scored", "too_long", "empty".
const char* to_string(CandidateStatus status);
CandidateStatus candidate_status_from_string(const std::string& name);

struct CandidateScore {
  std::string source;  ///< the response's source, as in the pool
  CandidateStatus status = CandidateStatus::scored;
  /// s(x, y): mean log-prob per response token; NaN unless scored.
  double score = std::numeric_limits<double>::quiet_NaN();
  double logprob_sum = 0.0;     ///< sum of the response tokens' log-probs (0 unless scored)
  int64_t response_tokens = 0;  ///< |y| (counted for skipped candidates too)
  /// Index (in the pool) of the identical candidate whose score this one took; -1 when it was
  /// scored itself (or skipped).
  int64_t duplicate_of = -1;

  bool has_score() const { return status == CandidateStatus::scored; }
};

/// The scores of one pool, candidates in the pool's order.
struct PoolScores {
  std::string id;
  int64_t pool_index = 0;     ///< position of the pool in the input (for merging shards)
  int64_t prompt_tokens = 0;  ///< tokens of the rendered prompt
  std::vector<CandidateScore> candidates;

  nlohmann::json to_json() const;
  /// Errors are FormatErrors naming `loc`.
  static PoolScores from_json(const nlohmann::json& object, const data::RecordLocation& loc);
};

/// Counts over a set of pools (recomputed from the candidates, so merged shards add up).
struct ScoreStats {
  int64_t pools = 0;
  int64_t candidates = 0;
  int64_t scored = 0;            ///< candidates with a score (deduplicated ones included)
  int64_t skipped_too_long = 0;
  int64_t skipped_empty = 0;
  int64_t deduplicated = 0;      ///< candidates that took an identical candidate's score
  int64_t response_tokens = 0;   ///< response tokens of the candidates run through the model
  int64_t prompt_tokens = 0;     ///< prompt tokens run through the model (once per pool when
                                 ///< prompts are shared)
  double seconds = 0.0;          ///< wall time of the scoring (0 for merged files)

  nlohmann::json to_json() const;
};
ScoreStats summarize(const std::vector<PoolScores>& scores);

struct GrapeScoreOptions {
  /// A format string containing "{instruction}", or a chat template name (plain, chatml,
  /// llama2).
  std::string prompt_template = kPaperTemplate;
  /// Longest prompt + response scored, in tokens; 0: the model's max_position_embeddings.
  int64_t max_length = 0;
  /// Responses per forward pass.
  int64_t batch_size = 16;
  /// Run each instruction's prompt once into a KV cache and reuse it for its responses.
  bool share_prompt = true;
  /// Score identical responses of a pool once.
  bool dedup = true;
  /// This process's share: pools i with i % world_size == rank (a run's come from
  /// concord::process_shard(); not config keys).
  int64_t rank = 0;
  int64_t world_size = 1;

  /// The declared keys (score_options_schema()) plus rank and world_size.
  nlohmann::json to_json() const;
};

/// The config keys of GrapeScoreOptions, declared once: template, max_length (>= 0),
/// batch_size (>= 1), share_prompt, dedup. The `grape` task's config includes them.
const OptionsSchema<GrapeScoreOptions>& score_options_schema();

/// A rendered, tokenised instruction/response pair: the ids the model sees.
struct ScoringTokens {
  std::vector<int64_t> prompt;    ///< context (non-empty)
  std::vector<int64_t> response;  ///< the scored tokens
};

/// How `prompt_template` turns (instruction, response) into tokens. Throws on a template that
/// is neither a format string with "{instruction}" nor a chat template name.
class PromptRenderer {
 public:
  PromptRenderer(const std::string& prompt_template, const text::Tokenizer& tokenizer);
  /// The tokens of one pair. The prompt part depends on the instruction only (the same for
  /// every response of it), which is what lets grape_score run it once per pool.
  ScoringTokens render(const std::string& instruction, const std::string& response) const;
  /// The prompt as text (BOS/EOS pieces of chat templates written as <s>, </s>).
  std::string prompt_text(const std::string& instruction) const;
  bool is_chat_template() const { return chat_ != nullptr; }
  const std::string& prompt_template() const { return template_; }

 private:
  std::string template_;
  std::shared_ptr<const data::ChatTemplate> chat_;
  const text::Tokenizer* tokenizer_;
};

/// Scores this rank's share of `pools` (the others are not in the result). The result is in
/// pool order; each PoolScores carries its pool_index. `stats` (optional) gets the counts and
/// the wall time. The model is switched to eval mode (dropout off) and left there. Options
/// outside their declared ranges are ConfigErrors; a LibTorch error inside is a TorchError.
std::vector<PoolScores> grape_score(lm::CausalLM model, const text::Tokenizer& tokenizer,
                                    const std::vector<data::GrapePool>& pools,
                                    const GrapeScoreOptions& options = {},
                                    ScoreStats* stats = nullptr);

/// Writes scores as JSONL (one pool a line), atomically.
void write_score_file(const std::filesystem::path& path, const std::vector<PoolScores>& scores);
/// Reads a file written by write_score_file; a bad line is a FormatError "FILE:LINE: ...".
std::vector<PoolScores> read_score_file(const std::filesystem::path& path);

/// "scores.rank<r>-of-<w>.jsonl": the part rank r of w writes.
std::string score_shard_name(int64_t rank, int64_t world_size);

/// Merges the parts into pool order. With `expected_pools` >= 0, every index 0..n-1 must be
/// present; a pool that appears twice is an error either way.
std::vector<PoolScores> merge_scores(std::vector<std::vector<PoolScores>> parts,
                                     int64_t expected_pools = -1);
std::vector<PoolScores> merge_score_files(const std::vector<std::filesystem::path>& paths,
                                          int64_t expected_pools = -1);

}  // namespace concord::grape
