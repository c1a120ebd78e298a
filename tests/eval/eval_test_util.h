// Helpers for the eval tests: a small synthetic TUMLU folder whose items say which they are, and
// a fake TumluModel that answers the gold option for even item indices and a wrong one for odd.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/eval/tumlu_eval.h"
#include "test_support.h"

namespace concord::eval::test {

/// Skips the test when the TUMLU-mini data is not on this machine.
#define CONCORD_REQUIRE_TUMLU()                                                              \
  do {                                                                                       \
    if (::concord::testing::tumlu_dir().empty()) {                                           \
      GTEST_SKIP() << "TUMLU-mini data not found: set CONCORD_TUMLU_DIR or place it at "      \
                      "../shared/data/tumlu-mini";                                           \
    }                                                                                        \
  } while (0)

/// One line of a synthetic subject file. Question "Q<index> <subject>", gold option
/// "right-<index>", the others "wrong-<index>-<k>"; the gold sits at `gold` in stored order.
inline std::string synthetic_line(const std::string& subject, int index, int n_choices, int gold,
                                  bool with_cot) {
  nlohmann::json j;
  j["question"] = "Q" + std::to_string(index) + " " + subject;
  std::vector<std::string> choices;
  for (int k = 0, w = 0; k < n_choices; ++k) {
    choices.push_back(k == gold ? "right-" + std::to_string(index)
                                : "wrong-" + std::to_string(index) + "-" + std::to_string(w++));
  }
  j["choices"] = choices;
  j["answer"] = std::string(1, static_cast<char>('A' + gold));
  j["subject"] = subject;
  if (with_cot) j["CoT"] = "Solution " + std::to_string(index) + ". Düzgün cavab " + j["answer"].get<std::string>();
  return j.dump() + "\n";
}

/// Writes <root>/<language>/{dev,test}/<subject>.jsonl with `n_test` test items (gold cycling
/// through the stored positions, so the stored order is far from uniform only by design) and 5
/// dev items.
inline void write_synthetic_subject(const std::filesystem::path& root, const std::string& language,
                                    const std::string& subject, int n_test, int n_choices = 4,
                                    bool with_cot = false) {
  std::string dev, test;
  for (int i = 0; i < 5; ++i) dev += synthetic_line(subject, 100 + i, n_choices, i % n_choices, with_cot);
  for (int i = 0; i < n_test; ++i) test += synthetic_line(subject, i, n_choices, (i * 7) % n_choices, false);
  concord::testing::write_file(root / language / "dev" / (subject + ".jsonl"), dev);
  concord::testing::write_file(root / language / "test" / (subject + ".jsonl"), test);
}

/// The item index named in the last question of a prompt ("... Sual: Q7 Biology\n..."), in any
/// language (the synthetic questions all start with "Q<index>").
inline int last_question_index(const std::string& prompt) {
  const auto pos = prompt.rfind(": Q");
  if (pos == std::string::npos) return -1;
  return std::stoi(prompt.substr(pos + 3));
}

/// Answers like a model that continues "Cavab: " with "B) right-7": the gold option for even
/// items, the next option for odd ones. It finds the options in the prompt's last block itself,
/// so a test catches a gold letter that does not follow its option.
class ParityModel : public TumluModel {
 public:
  explicit ParityModel(std::string name) : name_(std::move(name)) {}

  std::string name() const override { return name_; }

  std::vector<std::string> generate(const std::vector<std::string>& prompts,
                                    const std::vector<std::string>& stop_strings,
                                    int64_t max_new_tokens) override {
    ++generate_calls;
    last_stop_strings = stop_strings;
    last_max_new_tokens = max_new_tokens;
    std::vector<std::string> out;
    for (const auto& p : prompts) {
      const int index = last_question_index(p);
      const auto letters = shown_letters(p);
      int gold = -1;
      for (size_t k = 0; k < letters.size(); ++k) {
        if (letters[k] == "right-" + std::to_string(index)) gold = static_cast<int>(k);
      }
      EXPECT_GE(gold, 0) << "gold option not found in the prompt's last block";
      const int pick = index % 2 == 0 ? gold : (gold + 1) % static_cast<int>(letters.size());
      out.push_back(std::string(1, static_cast<char>('A' + pick)) + ") " + letters[pick] + "\n");
    }
    return out;
  }

  std::vector<double> loglik(const std::string& prefix,
                             const std::vector<std::string>& continuations) override {
    ++loglik_calls;
    last_prefix = prefix;
    const int index = last_question_index(prefix);
    const auto letters = shown_letters(prefix);
    std::vector<double> scores(continuations.size(), -5.0);
    int gold = -1;
    for (size_t k = 0; k < letters.size(); ++k) {
      if (letters[k] == "right-" + std::to_string(index)) gold = static_cast<int>(k);
    }
    const int pick = index % 2 == 0 ? gold : (gold + 1) % static_cast<int>(letters.size());
    scores[pick] = -0.5;
    return scores;
  }

  int generate_calls = 0, loglik_calls = 0;
  std::vector<std::string> last_stop_strings;
  int64_t last_max_new_tokens = 0;
  std::string last_prefix;

 private:
  // The option texts of the last question block, in shown order.
  std::vector<std::string> shown_letters(const std::string& prompt) const {
    const auto block = prompt.substr(prompt.rfind(": Q"));
    std::vector<std::string> texts;
    for (char letter = 'A'; letter <= 'D'; ++letter) {
      const std::string marker = std::string("\n") + letter + ") ";
      const auto pos = block.find(marker);
      if (pos == std::string::npos) break;
      const auto end = block.find('\n', pos + marker.size());
      texts.push_back(block.substr(pos + marker.size(), end - pos - marker.size()));
    }
    return texts;
  }

  std::string name_;
};

/// A model that must not be called (resume tests).
class RefusingModel : public TumluModel {
 public:
  explicit RefusingModel(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  std::vector<std::string> generate(const std::vector<std::string>&, const std::vector<std::string>&,
                                    int64_t) override {
    ADD_FAILURE() << "generate called on a resumed run";
    return {};
  }
  std::vector<double> loglik(const std::string&, const std::vector<std::string>&) override {
    ADD_FAILURE() << "loglik called on a resumed run";
    return {};
  }

 private:
  std::string name_;
};

}  // namespace concord::eval::test
