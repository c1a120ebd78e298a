// The GRAPE paper's controlled claim, in miniature ("The Best Instruction-Tuning Data are Those
// That Fit", arXiv 2502.04194, Sec. 4): with the instructions and the step budget fixed, SFT on
// the responses the base model itself finds most probable,
//
//   y*(x) = argmax_y (1/|y|) sum_t log p_base(y_t | template(x), y_<t)        (GRAPE)
//
// beats SFT on a random response per instruction, on the single source that is best on its own,
// on the least probable response (Reverse-GRAPE) and on all responses.
//
// The run: a synthetic pool with verifiable answers (synthetic_pool.h); a byte-level base model
// pretrained on text in one of the sources' styles (so it has a "style" of its own); GRAPE
// scores of every candidate under that base model; then, for each selection mode and seed, SFT
// from the base weights for the same number of steps and greedy accuracy on held-out
// instructions, checked by a program.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/statistics.h"
#include "concord/grape/synthetic_pool.h"
#include "concord/lm/model_config.h"
#include "concord/lm/causal_lm.h"
#include "concord/train/trainer.h"

namespace concord::grape {

struct GrapeExperimentOptions {
  SyntheticPoolOptions pool;
  lm::ModelConfig model;              ///< the base model's architecture (byte vocabulary)
  train::TrainerOptions pretrain;     ///< the base model's pretraining
  int64_t pretrain_block = 128;
  int64_t pretrain_batch_size = 16;
  train::TrainerOptions sft;          ///< the same budget for every selection
  int64_t sft_batch_size = 16;
  /// Selection modes compared (select.h); "source" uses the source that is best on its own,
  /// found by fine-tuning on each source with the first seed.
  std::vector<std::string> modes = {"grape", "random", "source", "reverse", "all"};
  std::vector<uint64_t> seeds = {1, 2, 3};
  /// Generation limit when scoring held-out answers; 0: the longest response in the pool plus
  /// a margin (generation_budget), so no style's answer is cut off by the limit.
  int64_t max_new_tokens = 0;
  uint64_t base_seed = 1;             ///< the base model's initialisation and data order
};

struct ModeResult {
  std::string mode;
  SeedSummary accuracy;                      ///< held-out accuracy (%) over the seeds
  std::map<std::string, SeedSummary> task_accuracy;  ///< the same per task family
  int64_t examples = 0;                      ///< SFT examples selected (first seed)
  std::map<std::string, int64_t> sources;    ///< selected examples per source (first seed)
  std::vector<std::string> sample_outputs;   ///< the first held-out generations (first seed)
  double length_limited = 0;                 ///< share of first-seed generations cut by the limit
  /// {"mode", "mean", "stddev", "ci_low", "ci_high", "seeds", "per_seed", "examples", ...}
  nlohmann::json to_json() const;
};

/// A mode's difference from GRAPE in held-out accuracy (points): Welch's 95% interval, and the
/// per-seed difference's (a seed fixes the SFT data order and initial state for every mode).
struct ModeComparison {
  std::string mode;
  MeanDifference grape_minus_mode;
  MeanDifference paired;
};

struct GrapeExperimentResult {
  /// The base model before any SFT (%), asked in its pretraining text's format (whether it can
  /// do the tasks at all), and with the chat template (what SFT has to teach).
  double base_accuracy = 0;
  double base_accuracy_question_answer = 0;
  std::map<std::string, double> base_task_accuracy;  ///< base_accuracy per task family
  /// The best constant answer's accuracy on the held-out items (%): what a model that learned
  /// only the answer format reaches.
  double constant_answer_accuracy = 0;
  double base_length_limited = 0;            ///< share of its generations cut by the limit
  int64_t max_new_tokens = 0;                ///< the generation limit used
  double base_pretrain_loss = 0;
  std::map<std::string, double> single_source_accuracy;  ///< SFT on each source, first seed (%)
  std::string best_source;
  std::map<std::string, int64_t> grape_wins;  ///< pools where each source had the top score
  std::vector<ModeResult> modes;
  std::vector<ModeComparison> comparisons;    ///< grape against every other mode run
  nlohmann::json to_json() const;
};

/// How a held-out instruction is put to a model.
enum class AnswerPrompt {
  /// The plain chat template SFT trains ("Question: {x}\nAnswer:"); generation stops at EOS,
  /// which SFT teaches (a newline stop would cut the multi-line `steps` answers before they
  /// state the result).
  question_answer,
  /// The pretraining text's own format ("{x} " and the model continues the line), for the base
  /// model: it has never seen the chat template, and its facts are one per line with no EOS.
  pretraining_text,
};

/// Greedy accuracy (%) of `model` on `items`, the instruction put as `prompt` says.
/// `task_accuracy` (optional) receives the accuracy (%) per task family.
/// `outputs` (optional) receives each item's generated text.
/// `length_limited` (optional) receives the share of generations that stopped at the limit.
double heldout_accuracy(lm::CausalLM model, const std::vector<SyntheticItem>& items,
                        int64_t max_new_tokens, AnswerPrompt prompt,
                        std::vector<std::string>* outputs = nullptr, double* length_limited = nullptr,
                        std::map<std::string, double>* task_accuracy = nullptr);

/// The longest response in the pool, in (byte) tokens, plus a margin of 8: the generation
/// budget that lets every style's answer finish.
int64_t generation_budget(const SyntheticPool& pool);

GrapeExperimentResult run_grape_experiment(
    const GrapeExperimentOptions& options,
    const std::function<void(const std::string&)>& progress = nullptr);

/// Why a run's comparison says little, or "" when nothing says so: the base model scored below
/// `learned` % in its own format (GRAPE presumes a target model that can do the task), or the
/// best selection after SFT scored below half the base model (SFT lost what pretraining taught).
/// A small byte model forms such skills late, by seed and summation order (docs/grape.md); a
/// config that leaves families unlearned on purpose lowers `learned` or ignores the first case.
std::string premise_caveat(const GrapeExperimentResult& result, double learned = 90.0);

}  // namespace concord::grape
