// A synthetic GRAPE pool with verifiable answers, for miniature versions of the controlled
// experiment of "The Best Instruction-Tuning Data are Those That Fit" (arXiv 2502.04194; there:
// UltraInteract instructions, responses sampled from several models, SFT on each selection,
// accuracy on benchmarks): one instruction set, several correct responses per instruction from
// sources that differ in style, SFT on each selection, accuracy on held-out instructions.
//
// Instructions come from seven task families whose answers a program checks:
//   add       "What is 37 plus 45?"                            -> 82
//   subtract  "What is 81 minus 19?"                           -> 62   (never negative)
//   multiply  "What is 7 times 12?"                            -> 84
//   reverse   "Reverse the word 'plant'."                      -> tnalp
//   upper     "Write 'stone' in capital letters."              -> STONE
//   lower     "Write 'STONE' in small letters."                -> stone
//   count     "How many times does the letter 'a' appear in 'banana'?" -> 3
// Every instruction gets one correct response from each source, each in its own style:
//   terse       "82"
//   sentence    "The answer is 82."
//   steps       a worked solution ending in "The answer is 82."
//   base_style  "So the result is 82." — the style of the pretraining text this generator also
//               writes (pretraining_documents), so a base model pretrained on it finds these
//               responses most probable: the situation GRAPE is built for.
// All draws come from std::mt19937_64 outputs directly (no std distributions, whose results
// differ between standard libraries), so a seed gives the same pool on every platform.
// Held-out instructions never appear among the training pools or in the pretraining text.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/data/records.h"

namespace concord::grape {

/// One instruction with its reference answer.
struct SyntheticItem {
  std::string id;
  std::string task;         ///< add, subtract, multiply, reverse, upper, lower, count
  std::string instruction;
  std::string answer;       ///< canonical answer text ("82", "tnalp", ...)

  nlohmann::json to_json() const;  ///< {"id","task","instruction","answer"}
};

struct SyntheticPoolOptions {
  int64_t train_instructions = 256;
  int64_t heldout_instructions = 64;
  /// Task families drawn from (uniformly); empty: all of synthetic_tasks().
  std::vector<std::string> tasks;
  /// Sources written for each instruction, in this order before shuffling; empty: all of
  /// synthetic_sources().
  std::vector<std::string> sources;
  /// Shuffle the order of the responses within each pool (so position says nothing).
  bool shuffle_responses = true;
  /// Pretraining documents, and facts per document.
  int64_t pretraining_documents = 512;
  int64_t facts_per_document = 8;
  /// The style each task family's facts take in the pretraining text (task -> source; a
  /// one-line source: terse, sentence or base_style); families not named use base_style. A
  /// base model whose preferred style differs by family is the setting where choosing per
  /// instruction (GRAPE) and choosing one source for all differ.
  std::map<std::string, std::string> pretraining_styles;
  /// The share of pretraining facts whose response starts on a new line instead of after a
  /// space. SFT's chat template puts "\nAnswer:" between an instruction and its response, so a
  /// base model that has only seen a response on its instruction's line must learn, during SFT,
  /// to read the instruction across a line break; one that has seen both layouts need not.
  /// (In the quickstart's GRAPE stage it made the copy harder to form and did not help SFT
  /// keep it: docs/grape.md.)
  double pretraining_line_breaks = 0.0;
  uint64_t seed = 1234;

  nlohmann::json to_json() const;
};

struct SyntheticPool {
  std::vector<data::GrapePool> train;     ///< pools for GRAPE (one response per source)
  std::vector<SyntheticItem> train_items;  ///< the same instructions with their answers
  std::vector<SyntheticItem> heldout;     ///< evaluation instructions (disjoint from train)
  /// Plain-text documents of facts ("<instruction> <response>", the response in its family's
  /// pretraining style, base_style unless set, on a line of its own for the share
  /// pretraining_line_breaks) joined by newlines, for pretraining a base model; none uses a
  /// held-out instruction.
  std::vector<std::string> pretraining;
};

/// The task families and sources, in their canonical order.
const std::vector<std::string>& synthetic_tasks();
const std::vector<std::string>& synthetic_sources();

/// The response of `source` to `item` (the styles above). Unknown names throw listing the
/// valid ones.
std::string synthetic_response(const SyntheticItem& item, const std::string& source);

SyntheticPool make_synthetic_pool(const SyntheticPoolOptions& options = {});

/// The answer a model's output states: the text after the first "answer is " or "result is "
/// (up to '.', ',', a newline or the end), else the first non-empty line; trimmed, a final '.'
/// dropped. Works on every style above and on a generation that rambles on after its answer.
std::string extract_synthetic_answer(const std::string& output);

/// The share (%) of `items` the best constant answer gets right: the most frequent answer's
/// share. The level a model that learned only the answer format reaches.
double constant_answer_accuracy(const std::vector<SyntheticItem>& items);

/// True when the answer stated in `output` is `item`'s answer (numbers compared as integers,
/// words exactly, case included: "upper" asks for capitals, "lower" for small letters).
bool verify_synthetic_answer(const SyntheticItem& item, const std::string& output);

}  // namespace concord::grape
