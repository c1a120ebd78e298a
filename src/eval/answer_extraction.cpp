#include "concord/eval/answer_extraction.h"

#include <set>

#include "concord/eval/tumlu_prompt.h"
#include "concord/text/regex.h"
#include "concord/text/utf8.h"
#include "text_util.h"

namespace concord::eval {

namespace {

// ---- official ---------------------------------------------------------------------------------

class OfficialExtractor final : public AnswerExtractor {
 public:
  std::string name() const override { return "official"; }

  std::optional<char> extract(std::string_view output, const TumluLanguage& language,
                              const std::vector<std::string>& /*choices*/) const override {
    const std::string text = official_normalize(output);
    const std::string& W = language.answer_keyword;
    const std::string& w = language.answer_keyword_lower;
    // The published loop: pattern index outer, letters A-D inner. The keyword is matched
    // against the normalised text as it is, so a keyword that itself holds one of the mapped
    // Cyrillic capitals (crimean-tatar-cyrillic "Джевап") only ever matches in lower case.
    for (int i = 0; i < 7; ++i) {
      for (char letter = 'A'; letter <= 'D'; ++letter) {
        const std::string L(1, letter);
        std::string pattern;
        switch (i) {
          case 0: pattern = W + ": " + L; break;
          case 1: pattern = w + ": " + L; break;
          case 2: pattern = W + " " + L + ")"; break;
          case 3: pattern = w + " " + L + ")"; break;
          case 4: pattern = W + " " + L + " "; break;
          case 5: pattern = w + " " + L + " "; break;
          default: pattern = L + ")"; break;
        }
        if (text.find(pattern) != std::string::npos) return letter;
      }
    }
    return std::nullopt;
  }
};

// ---- robust -----------------------------------------------------------------------------------

// A standalone option letter: Latin A-D or a Cyrillic look-alike (А Б В С Д), not glued to a
// letter or digit on either side.
constexpr const char* kLetter = "[A-D\\x{410}\\x{411}\\x{412}\\x{421}\\x{414}](?![\\p{L}\\p{N}])";
constexpr const char* kBefore = "(?<![\\p{L}\\p{N}])";

// Answer words of every TUMLU language (and their possessive stems: cavabı, жауабы, cevabı),
// plus English and Russian ones that multilingual models fall back to.
constexpr const char* kAnswerWords =
    "(?i:cavab|cevap|cevab|javob|jawab|jawap|juwap|juwab|yanıt|yanit|жауап|жауаб|җавап|җаваб|"
    "жавоб|джевап|джеваб|جاۋاب|answer|ответ)\\p{L}{0,3}";

// Words that name an option: "B variantı", "C şıkkı", "вариант B", "B нұсқасы", "option C".
constexpr const char* kOptionWords =
    "(?i:variant|şık|sik|seçenek|secenek|вариант|нұсқа|option|javob|cavab|cevap|жауап)";

int letter_index(std::string_view text, size_t begin) {
  size_t i = begin;
  const char32_t c = text::utf8::next(text, i);
  switch (c) {
    case U'A': case U'\u0410': return 0;
    case U'B': case U'\u0411': case U'\u0412': return 1;
    case U'C': case U'\u0421': return 2;
    case U'D': case U'\u0414': return 3;
    default: return -1;
  }
}

std::string quote_regex(std::string_view literal) {
  std::string out;
  size_t pos = 0;
  while (true) {
    const size_t e = literal.find("\\E", pos);
    out += "\\Q";
    out.append(literal.substr(pos, e == std::string_view::npos ? e : e - pos));
    out += "\\E";
    if (e == std::string_view::npos) break;
    out += "\\\\E";
    pos = e + 2;
  }
  return out;
}

struct RobustPatterns {
  text::Regex whole{std::string("^[(\\[]?\\s*") + kLetter + "\\s*[)\\].:]?$", "robust/whole"};
  text::Regex leading{std::string("^[(\\[]?") + kLetter + "(?=[)\\].:,](?:\\s|$))", "robust/leading"};
  text::Regex leading_bare{std::string("^") + kLetter + "\\s+\\K.*", "robust/leading_bare"};
  text::Regex marker{std::string("(?:^|(?<=\\s))[(\\[]?\\K") + kLetter + "(?=\\))", "robust/marker"};
  text::Regex keyword{std::string("(?<!\\p{L})") + kAnswerWords +
                          "(?:\\s*(?:is|:|：|-|–|—|=))*\\s*[(\\[]?\\s*\\K" + kLetter,
                      "robust/keyword"};
  text::Regex latex{std::string("\\\\(?:boxed|text|textbf|mathrm)\\{\\s*\\K") + kLetter,
                    "robust/latex"};
  text::Regex option_after{std::string(kBefore) + kLetter + "(?=\\)?\\s*[-–]?\\s*" +
                               kOptionWords + ")",
                           "robust/option_after"};
  text::Regex lower_start{"^\\p{Ll}", "robust/lower_start"};
  text::Regex option_before{std::string("(?<!\\p{L})") + kOptionWords +
                                "\\p{L}{0,3}\\s*[:(]?\\s*\\K" + kLetter,
                            "robust/option_before"};
};

const RobustPatterns& robust_patterns() {
  static const RobustPatterns patterns;
  return patterns;
}

// The letter of a first non-empty line that is only a letter ("B", "B)", "(B)", "B.") when more
// text follows it and no later line is a lone other letter; -1 otherwise. Text that goes on in
// lower case after the break ("A\nplant cell has a wall") is a sentence broken across lines, not
// an answer and its explanation.
int lone_letter_line(std::string_view output, const RobustPatterns& p) {
  std::string raw = detail::sanitize_utf8(output);
  detail::replace_all(raw, "*", "");
  detail::replace_all(raw, "`", "");
  int first = -1;
  bool more_text = false;
  for (size_t pos = 0; pos <= raw.size();) {
    size_t end = raw.find('\n', pos);
    if (end == std::string::npos) end = raw.size();
    const std::string line = python_strip(raw.substr(pos, end - pos));
    pos = end + 1;
    if (line.empty()) continue;
    size_t b = 0, e = 0;
    int letter = -1;
    if (p.whole.find(line, 0, b, e)) {
      for (size_t i = 0; i < line.size() && letter < 0; text::utf8::next(line, i)) {
        letter = letter_index(line, i);
      }
    }
    if (first < 0) {
      if (letter < 0) return -1;  // the output does not open with a lone letter
      first = letter;
    } else if (letter >= 0 && letter != first) {
      return -1;  // "A\nB\nC": letters listed, none chosen
    } else if (letter < 0) {
      if (!more_text && p.lower_start.find(line, 0, b, e)) return -1;
      more_text = true;
    }
  }
  return more_text ? first : -1;
}

class RobustExtractor final : public AnswerExtractor {
 public:
  std::string name() const override { return "robust"; }

  std::optional<char> extract(std::string_view output, const TumluLanguage& /*language*/,
                              const std::vector<std::string>& choices) const override {
    const auto& p = robust_patterns();
    std::string t = detail::sanitize_utf8(output);
    detail::replace_all(t, "*", "");
    detail::replace_all(t, "`", "");
    t = python_strip(detail::collapse_python_whitespace(t));
    if (t.empty()) return std::nullopt;
    const int n = choices.empty() ? 4 : static_cast<int>(choices.size());
    auto valid = [&](int idx) { return idx >= 0 && idx < n; };
    auto as_letter = [](int idx) { return static_cast<char>('A' + idx); };
    size_t b = 0, e = 0;

    // 1. The whole output is one letter (possibly bracketed or followed by ")", "." or ":").
    if (p.whole.find(t, 0, b, e)) {
      for (size_t i = 0; i < t.size();) {
        const int idx = letter_index(t, i);
        if (idx >= 0) return valid(idx) ? std::optional<char>(as_letter(idx)) : std::nullopt;
        text::utf8::next(t, i);
      }
    }

    // 2. A leading letter with a separator, unless the output enumerates options.
    std::set<int> markers;
    p.marker.for_each_match(t, [&](size_t mb, size_t) { markers.insert(letter_index(t, mb)); });
    const bool enumeration = markers.size() >= 2;
    if (!enumeration && p.leading.find(t, 0, b, e)) {
      // The match is an optional bracket and the letter: the letter is its last character.
      size_t last = e - 1;
      while (last > b && (static_cast<unsigned char>(t[last]) & 0xC0) == 0x80) --last;
      const int idx = letter_index(t, last);
      if (valid(idx)) return as_letter(idx);
    }
    // A letter on a line of its own that opens a longer output ("B\n\nI. Divinil - alkadien
    // ..."): the answer, then its explanation. The line breaks are gone from `t`, so the lines
    // of the output as written are read. The enumeration guard above is not needed here (an
    // echoed option list has text after each letter); a second line holding a lone letter is
    // ("A\nB\nC" lists letters, it chooses none).
    if (const int li = lone_letter_line(output, p); valid(li)) return as_letter(li);
    // A leading letter followed by the text of that very choice: "C 7".
    if (!enumeration && p.leading_bare.find(t, 0, b, e)) {
      const int li = letter_index(t, 0);
      if (valid(li) && !choices.empty()) {
        const std::string rest = t.substr(b);
        text::Regex same("(?i)^" + quote_regex(python_strip(choices[li])) +
                             "(?![\\p{L}\\p{N}])",
                         "robust/choice");
        size_t cb = 0, ce = 0;
        if (!python_strip(choices[li]).empty() && same.find(rest, 0, cb, ce)) return as_letter(li);
      }
    }

    // 3. An answer word followed by a letter; the last such statement is the final answer.
    std::optional<char> keyword;
    auto take_last = [&](const text::Regex& re) {
      re.for_each_match(t, [&](size_t mb, size_t) {
        const int idx = letter_index(t, mb);
        if (valid(idx)) keyword = as_letter(idx);
      });
    };
    take_last(p.keyword);
    if (!keyword) take_last(p.latex);
    if (keyword) return keyword;

    // 4. A letter named together with an option word, if every such mention agrees.
    std::set<int> named;
    p.option_after.for_each_match(t, [&](size_t mb, size_t) { named.insert(letter_index(t, mb)); });
    p.option_before.for_each_match(t, [&](size_t mb, size_t) { named.insert(letter_index(t, mb)); });
    if (named.size() == 1 && valid(*named.begin())) return as_letter(*named.begin());
    if (named.size() > 1) return std::nullopt;

    // 5. The text of exactly one choice, in an answer that says little else.
    if (!choices.empty() && !enumeration) {
      int found = -1, hits = 0;
      size_t found_len = 0;
      for (int i = 0; i < n; ++i) {
        const std::string c = python_strip(choices[i]);
        if (c.empty()) continue;
        text::Regex re("(?i)" + std::string(kBefore) + quote_regex(c) + "(?![\\p{L}\\p{N}])",
                       "robust/choice");
        size_t cb = 0, ce = 0;
        if (re.find(t, 0, cb, ce)) {
          ++hits;
          found = i;
          found_len = detail::code_points(t.substr(cb, ce - cb));
        }
      }
      if (hits == 1 && detail::code_points(t) <= found_len + 24) return as_letter(found);
    }
    return std::nullopt;
  }
};

}  // namespace

std::string official_normalize(std::string_view output) {
  std::string text = detail::collapse_python_whitespace(output);
  detail::replace_all(text, "*", "");
  detail::replace_all(text, "\u0410", "A");  // А
  detail::replace_all(text, "\u0412", "B");  // В
  detail::replace_all(text, "\u0411", "B");  // Б
  detail::replace_all(text, "\u0421", "C");  // С
  detail::replace_all(text, "\u0414", "D");  // Д
  return text;
}

Registry<AnswerExtractorFactory>& answer_extractors() {
  static Registry<AnswerExtractorFactory> registry = [] {
    Registry<AnswerExtractorFactory> r("answer extractor");
    r.add("official", [] { return std::make_unique<OfficialExtractor>(); });
    r.add("robust", [] { return std::make_unique<RobustExtractor>(); });
    return r;
  }();
  return registry;
}

std::unique_ptr<AnswerExtractor> make_answer_extractor(const std::string& name) {
  return answer_extractors().get(name)();
}

}  // namespace concord::eval
