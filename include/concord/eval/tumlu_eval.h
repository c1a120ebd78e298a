// The TUMLU evaluation driver over a model interface, so the model-dependent part is one adapter.
//
// Protocols (a registry; an unknown name lists the valid ones):
//   generative      the benchmark's 5-shot protocol (scripts/fewshot.py): per subject the dev
//                   items as shots, greedy generation stopped at the next question keyword, the
//                   letter read by an answer extractor.
//   generative_cot  the same with worked solutions as exemplars (scripts/CoT.py); only subjects
//                   whose dev items all carry one (azerbaijani, kazakh, kazakh-latin, turkish,
//                   uzbek).
//   loglik          the 5-shot prompt without its trailing space as a shared prefix, scored
//                   against each option's continuation (" A", " B", ...; or " " + option text):
//                   acc = argmax log p, acc_norm = argmax log p / characters.
//
// Outputs go to <out>/<language>/outputs/<protocol>/<model>/<Subject>.json (tumlu_outputs.h).
// Sharding (core/shard.h's protocol): rank r of w takes items i with i % w == r of every subject
// and writes <Subject>.json's folder/.shards/<Subject>.rank<r>-of-<w>.json; whichever rank finds
// all w parts merges them, in item order, into <Subject>.json (option order is seeded per item, so
// the merged file equals a single-process run's; an item missing from the parts or in two of them
// is an error). Resume: a subject whose <Subject>.json exists is not run again, nor a shard whose
// part exists.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "concord/core/options.h"
#include "concord/core/registry.h"
#include "concord/eval/answer_extraction.h"
#include "concord/eval/tumlu_data.h"
#include "concord/eval/tumlu_outputs.h"
#include "concord/eval/tumlu_prompt.h"

namespace concord::eval {

/// What the evaluation needs from a model. An adapter over lm::CausalLM implements it with
/// lm::generate_text (greedy, stop strings) and lm::score_requests (reusing the prefix's KV cache
/// across the continuations of one call; CausalLmTumluModel).
class TumluModel {
 public:
  virtual ~TumluModel() = default;
  /// Folder name under outputs/<protocol>/ (may hold '/', as "Qwen/Qwen2.5-7B").
  virtual std::string name() const = 0;
  /// Greedy continuation of each prompt, at most `max_new_tokens` tokens, cut before the
  /// first occurrence of any stop string. One string per prompt, in order.
  virtual std::vector<std::string> generate(const std::vector<std::string>& prompts,
                                            const std::vector<std::string>& stop_strings,
                                            int64_t max_new_tokens) = 0;
  /// log p(continuation | prefix), summed over the continuation's tokens, one per continuation.
  virtual std::vector<double> loglik(const std::string& prefix,
                                     const std::vector<std::string>& continuations) = 0;

  struct LoglikRequest {
    std::string prefix;
    std::vector<std::string> continuations;
  };
  /// Several loglik() requests in one call (the loglik protocol sends every item of a subject,
  /// which share their shots), so an adapter can batch them and order them by length. One score vector per
  /// request, in order. The default calls loglik() on each.
  virtual std::vector<std::vector<double>> loglik_batch(const std::vector<LoglikRequest>& requests);
};

struct TumluEvalOptions {
  std::string protocol = "generative";
  /// Folders to evaluate; empty: every folder in the data.
  std::vector<std::string> languages;
  /// Shuffle options with `seed` (tumlu_prompt.h); false keeps the stored order.
  bool shuffle = true;
  uint64_t seed = 1234;
  /// 0: the protocol's default (generative 32, generative_cot 512).
  int64_t max_new_tokens = 0;
  /// Prompts per TumluModel::generate call (loglik sends a whole subject per call).
  int64_t batch_size = 16;
  /// loglik continuations: "letter" (" A") or "text" (" " + option text).
  std::string loglik_target = "letter";
  /// Extractor whose reading is stored as "prediction" (scores can be recomputed with any).
  std::string extractor = "official";
  /// This process's share (a run's come from concord::process_shard(); not config keys).
  int rank = 0;
  int world_size = 1;
};

/// The config keys of TumluEvalOptions, declared once: protocol, languages, shuffle,
/// shuffle_seed (-> seed), max_new_tokens (>= 0), batch_size (>= 1), loglik_target (letter, text),
/// extractor. Protocol and extractor names are checked against their registries when the
/// evaluation starts (both registries take additions, so a fixed list here could go stale).
const OptionsSchema<TumluEvalOptions>& tumlu_eval_options_schema();

class TumluProtocol {
 public:
  virtual ~TumluProtocol() = default;
  virtual std::string name() const = 0;
  /// False for subjects the protocol cannot run (generative_cot without worked solutions).
  virtual bool applies_to(const TumluLanguage& language, const TumluSubjectSet& subject) const;
  /// Runs test items `indices` of `subject`; one record per index, in order.
  virtual std::vector<TumluRecord> run(TumluModel& model, const TumluLanguage& language,
                                       const TumluSubjectSet& subject,
                                       const std::vector<size_t>& indices,
                                       const TumluEvalOptions& options,
                                       const AnswerExtractor& extractor) const = 0;
};

using TumluProtocolFactory = std::function<std::unique_ptr<TumluProtocol>()>;
/// "generative", "generative_cot", "loglik"; add() more before use.
Registry<TumluProtocolFactory>& tumlu_protocols();

struct TumluEvalResult {
  /// Every subject whose merged file exists after this call, scored with options.extractor.
  std::vector<SubjectOutcome> outcomes;
  int subjects_run = 0;      ///< subjects (or this rank's shards of them) computed now
  int subjects_resumed = 0;  ///< final file (or this rank's part) was already there
  int subjects_pending = 0;  ///< waiting for other ranks' parts
  int subjects_not_applicable = 0;
  bool complete() const { return subjects_pending == 0; }
};

/// Evaluates `model` on `data` and writes the outputs under `out_root`.
TumluEvalResult run_tumlu_eval(TumluModel& model, const TumluData& data,
                               const std::filesystem::path& out_root,
                               const TumluEvalOptions& options);

}  // namespace concord::eval
