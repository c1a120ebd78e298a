#include "concord/eval/tumlu_prompt.h"

#include <limits>
#include <numeric>

#include "concord/core/error.h"
#include "concord/text/utf8.h"
#include "text_util.h"

namespace concord::eval {

namespace detail {

std::string sanitize_utf8(std::string_view text) {
  return text::utf8::is_valid(text) ? std::string(text) : text::utf8::replace_invalid(text);
}

std::string collapse_python_whitespace(std::string_view raw) {
  const std::string text = sanitize_utf8(raw);
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  bool in_space = false;
  while (i < text.size()) {
    const size_t start = i;
    const char32_t c = text::utf8::next(text, i);
    if (is_python_space(c)) {
      if (!in_space) out.push_back(' ');
      in_space = true;
    } else {
      out.append(text, start, i - start);
      in_space = false;
    }
  }
  return out;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
}

}  // namespace detail

uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  CONCORD_CHECK(n >= 1, "uniform_below: n must be >= 1");
  // Accept x only below the largest multiple of n that fits in 2^64, then x % n is uniform.
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  const uint64_t rem = (max % n + 1) % n;  // 2^64 mod n
  const uint64_t limit = max - rem;        // x <= limit leaves (limit + 1) = k * n values
  uint64_t x;
  do {
    x = rng();
  } while (x > limit);
  return x % n;
}

void fisher_yates(std::vector<int>& values, std::mt19937_64& rng) {
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(values[i - 1], values[j]);
  }
}

std::mt19937_64 item_rng(uint64_t seed, std::string_view key) {
  // FNV-1a over the key, then splitmix64 of (seed, hash): a well-mixed 64-bit seed from both.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  uint64_t z = seed ^ (h + 0x9e3779b97f4a7c15ull + (seed << 6) + (seed >> 2));
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return std::mt19937_64(z);
}

std::string item_key(const TumluLanguage& language, std::string_view split,
                     std::string_view file_stem, size_t index) {
  std::string key = language.code;
  key += '/';
  key += split;
  key += '/';
  key += file_stem;
  key += '/';
  key += std::to_string(index);
  return key;
}

PresentedItem present_item(const TumluItem& item, bool shuffle, uint64_t seed,
                           std::string_view key) {
  PresentedItem out;
  out.order.resize(item.choices.size());
  std::iota(out.order.begin(), out.order.end(), 0);
  if (shuffle) {
    auto rng = item_rng(seed, key);
    fisher_yates(out.order, rng);
  }
  for (size_t i = 0; i < out.order.size(); ++i) {
    out.choices.push_back(item.choices[out.order[i]]);
    if (out.order[i] == item.answer) out.answer = static_cast<int>(i);
  }
  return out;
}

const char* to_string(PromptStyle style) { return style == PromptStyle::cot ? "cot" : "fewshot"; }

std::string format_choices(const std::vector<std::string>& choices) {
  std::string out;
  for (size_t i = 0; i < choices.size(); ++i) {
    if (i) out += '\n';
    out += static_cast<char>('A' + i);
    out += ") ";
    out += choices[i];
  }
  return out;
}

std::string format_fewshot_example(const TumluLanguage& language, std::string_view question,
                                   const std::vector<std::string>& choices, int answer) {
  return language.question_keyword + ": " + std::string(question) + "\n" + format_choices(choices) +
         "\n\n" + language.answer_keyword + ": " + answer_letter(answer) + "\n\n";
}

std::string format_fewshot_test(const TumluLanguage& language, std::string_view question,
                                const std::vector<std::string>& choices) {
  return language.question_keyword + ": " + std::string(question) + "\n" + format_choices(choices) +
         "\n\n" + language.answer_keyword + ": ";
}

std::string format_cot_example(const TumluLanguage& language, std::string_view question,
                               const std::vector<std::string>& choices, std::string_view solution) {
  // The published format_CoT_prompt ends an exemplar right after the solution and CoT.py
  // concatenates them, gluing "...variantıdır.Sual:" together; the blank line the 5-shot
  // template puts between exemplars is added here (docs/tumlu.md, "Deviations").
  return language.question_keyword + ": " + std::string(question) + "\n" + format_choices(choices) +
         "\n" + language.solution_keyword + ": " + std::string(solution) + "\n\n";
}

std::string format_cot_test(const TumluLanguage& language, std::string_view question,
                            const std::vector<std::string>& choices) {
  return language.question_keyword + ": " + std::string(question) + "\n" + format_choices(choices) +
         "\n" + language.solution_keyword + ": ";
}

std::string build_shots(const TumluLanguage& language, const TumluSubjectSet& subject,
                        const PromptOptions& options) {
  std::string shots;
  if (options.style == PromptStyle::cot) {
    CONCORD_CHECK(!language.solution_keyword.empty(), "TUMLU cot prompt: ", language.folder,
                  " has no solution keyword in the benchmark");
    CONCORD_CHECK(subject.has_cot(), "TUMLU cot prompt: ", subject.dev_path.string(),
                  ": not every dev item has a worked solution (\"CoT\")");
    // Stored option order: a worked solution refers to the options by letter.
    for (const auto& item : subject.dev) {
      shots += format_cot_example(language, python_strip(item.question), item.choices, item.cot);
    }
    return shots;
  }
  for (size_t i = 0; i < subject.dev.size(); ++i) {
    const auto& item = subject.dev[i];
    auto shown = present_item(item, options.shuffle, options.seed,
                              item_key(language, "dev", subject.file_stem, i));
    shots += format_fewshot_example(language, python_strip(item.question), shown.choices,
                                    shown.answer);
  }
  return shots;
}

TumluPrompt build_prompt(const TumluLanguage& language, const TumluSubjectSet& subject,
                         size_t index, const PromptOptions& options, const std::string& shots) {
  CONCORD_CHECK(index < subject.test.size(), "TUMLU prompt: item ", index, " out of range for ",
                subject.test_path.string());
  const auto& item = subject.test[index];
  TumluPrompt prompt;
  prompt.shots = shots;
  prompt.item = present_item(item, options.shuffle, options.seed,
                             item_key(language, "test", subject.file_stem, index));
  prompt.input = options.style == PromptStyle::cot
                     ? format_cot_test(language, item.question, prompt.item.choices)
                     : format_fewshot_test(language, item.question, prompt.item.choices);
  return prompt;
}

std::vector<std::string> stop_strings(const TumluLanguage& language) {
  return {"\n" + language.question_keyword + ":"};
}

std::string python_strip(std::string_view raw) {
  const std::string text = detail::sanitize_utf8(raw);
  size_t begin = 0, end = text.size();
  while (begin < end) {
    size_t i = begin;
    if (!detail::is_python_space(text::utf8::next(text, i))) break;
    begin = i;
  }
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
    size_t i = start;
    if (!detail::is_python_space(text::utf8::next(text, i))) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

}  // namespace concord::eval
