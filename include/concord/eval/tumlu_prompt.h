// TUMLU prompts as the benchmark builds them (github.com/ceferisbarov/TUMLU, scripts/utils.py:
// FEW_SHOT_PROMPTS, TEST_PROMPTS, format_CoT_prompt; scripts/fewshot.py and scripts/CoT.py),
// with the option shuffling made seeded and platform-independent.
//
// 5-shot (per subject, the 5 dev items, each with its options shuffled):
//   "Sual: {question}\nA) {c0}\nB) {c1}\n...\n\nCavab: {letter}\n\n"   x 5, then
//   "Sual: {question}\nA) ...\n\nCavab: "                               the test item
// CoT (dev items' worked solutions, options in stored order since the solution names letters):
//   "Sual: {question}\nA) ...\nHəll: {CoT}\n\n"                         x 5, then
//   "Sual: {question}\nA) ...\nHəll: "
// The stop string for generation is "\n" + the question keyword + ":" (the next question).
// Dev questions are str.strip()ped and test questions are not, as in the published scripts.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "concord/eval/tumlu_data.h"

namespace concord::eval {

/// A uniform draw from [0, n) (n >= 1) by rejection: no modulo bias, and the same sequence on
/// every platform because std::mt19937_64's output is fixed by the C++ standard (unlike
/// std::uniform_int_distribution's and std::shuffle's algorithms, which vary by library).
uint64_t uniform_below(std::mt19937_64& rng, uint64_t n);

/// Fisher-Yates shuffle of `values` with uniform_below.
void fisher_yates(std::vector<int>& values, std::mt19937_64& rng);

/// The engine for one item: seeded from `seed` and a key naming the item, so an item's
/// permutation depends on nothing else (not on sharding, order of evaluation or other items).
std::mt19937_64 item_rng(uint64_t seed, std::string_view key);

/// The options of an item as a model sees them.
struct PresentedItem {
  std::vector<std::string> choices;  ///< in presented order
  int answer = 0;                    ///< index of the gold option in `choices`
  std::vector<int> order;            ///< order[i] = stored index of presented option i
};

/// `shuffle` false keeps the stored order. The key of an item is
/// "<code>/<split>/<file stem>/<index>": a transliterated copy (kazakh-latin) shares its
/// language's code, so both scripts see the same option order and compare like for like.
PresentedItem present_item(const TumluItem& item, bool shuffle, uint64_t seed,
                           std::string_view key);
std::string item_key(const TumluLanguage& language, std::string_view split,
                     std::string_view file_stem, size_t index);

enum class PromptStyle { fewshot, cot };
const char* to_string(PromptStyle style);

struct PromptOptions {
  PromptStyle style = PromptStyle::fewshot;
  /// Shuffle options (dev shots of the 5-shot prompt and every test item) with `seed`.
  bool shuffle = true;
  uint64_t seed = 1234;
};

/// "A) first\nB) second\n..." (no trailing newline).
std::string format_choices(const std::vector<std::string>& choices);

/// One 5-shot exemplar: "{Q}: {question}\n{choices}\n\n{A}: {letter}\n\n".
std::string format_fewshot_example(const TumluLanguage& language, std::string_view question,
                                   const std::vector<std::string>& choices, int answer);
/// The test item: "{Q}: {question}\n{choices}\n\n{A}: ".
std::string format_fewshot_test(const TumluLanguage& language, std::string_view question,
                                const std::vector<std::string>& choices);
/// One CoT exemplar: "{Q}: {question}\n{choices}\n{S}: {solution}\n\n".
std::string format_cot_example(const TumluLanguage& language, std::string_view question,
                               const std::vector<std::string>& choices, std::string_view solution);
/// The CoT test item: "{Q}: {question}\n{choices}\n{S}: ".
std::string format_cot_test(const TumluLanguage& language, std::string_view question,
                            const std::vector<std::string>& choices);

/// The exemplar block of a subject (the benchmark's "system" text). The CoT style needs a
/// solution keyword for the language and a worked solution on every dev item; otherwise it
/// throws concord::Error naming the dev file.
std::string build_shots(const TumluLanguage& language, const TumluSubjectSet& subject,
                        const PromptOptions& options);

struct TumluPrompt {
  std::string shots;  ///< exemplars (same for every item of a subject)
  std::string input;  ///< the test item, ending with the answer (or solution) keyword and ": "
  PresentedItem item;
  std::string full() const { return shots + input; }
};

/// The prompt of test item `index` of `subject`; `shots` from build_shots().
TumluPrompt build_prompt(const TumluLanguage& language, const TumluSubjectSet& subject,
                         size_t index, const PromptOptions& options, const std::string& shots);

/// Where generation stops: the start of the next question ("\nSual:").
std::vector<std::string> stop_strings(const TumluLanguage& language);

/// Python's str.strip(): removes leading and trailing characters for which str.isspace() holds.
std::string python_strip(std::string_view text);

}  // namespace concord::eval
