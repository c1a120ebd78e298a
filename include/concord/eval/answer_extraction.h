// Reading the chosen letter out of a model's free-form TUMLU answer. Two extractors behind one
// interface, built by name from a registry (an unknown name throws and lists the valid ones):
//
// official  The benchmark's find_matching_pattern (github.com/ceferisbarov/TUMLU,
//           scripts/utils.py) exactly: collapse whitespace, drop '*', map the Cyrillic capitals
//           А В Б С Д to A B B C D, then try, for i = 1..7 and within each i the letters A, B, C,
//           D in turn, the i-th pattern of
//             "{W}: X", "{w}: X", "{W} X)", "{w} X)", "{W} X ", "{w} X ", "X)"
//           (W the language's answer keyword, w its lower case). The patterns are literal strings,
//           so a substring search is exactly Python's re.search on them.
// robust    Also reads what real models write that the official list misses, and never reads a
//           letter the output did not choose (docs/tumlu.md lists the rules with examples):
//             1. the whole output is a letter: "C", "C)", "(C)", "C."
//             2. a leading letter with a separator, unless the output enumerates options:
//                "C) 7", "B. Bakı"; not "A) 5 B) 7 C) 9"; or a letter alone on the first line
//                of a longer output: "B\n\nI. Divinil - alkadien ..."; not "A\nB\nC", not
//                "A\nplant cell ..." (a sentence broken across lines)
//             3. an answer word then the letter, the last one wins: "Cevap C:",
//                "Düzgün cavab B variantıdır", "Жауап: В", "\boxed{D}"
//             4. the letter with an option word, when every such mention agrees: "C şıkkı"
//             5. the text of exactly one choice in a short answer: "Cavab: Bakı"
//           Cyrillic look-alikes А Б В С Д count as A B B C D; a letter counts only as a
//           standalone token (not the "A" of "Aşağıdakı") and only if the item has that option.
//           nullopt when unsure.
#pragma once
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "concord/core/registry.h"
#include "concord/eval/tumlu_data.h"

namespace concord::eval {

class AnswerExtractor {
 public:
  virtual ~AnswerExtractor() = default;
  virtual std::string name() const = 0;
  /// The letter ('A'..'D') `output` chose for an item with `choices` in `language`, or nullopt.
  virtual std::optional<char> extract(std::string_view output, const TumluLanguage& language,
                                      const std::vector<std::string>& choices) const = 0;
};

using AnswerExtractorFactory = std::function<std::unique_ptr<AnswerExtractor>()>;

/// "official" and "robust"; add() more before use.
Registry<AnswerExtractorFactory>& answer_extractors();
std::unique_ptr<AnswerExtractor> make_answer_extractor(const std::string& name);

/// The text the official patterns search: whitespace runs -> " ", '*' dropped, А В Б С Д ->
/// A B B C D. Exposed for tests.
std::string official_normalize(std::string_view output);

}  // namespace concord::eval
