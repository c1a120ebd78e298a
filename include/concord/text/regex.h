// Regex: the small interface Concord's tokenizers use for Unicode regular expressions, over
// PCRE2 (8-bit code units, UTF and UCP mode so \s, \p{L}, \w follow Unicode, JIT-compiled where
// the platform has a JIT). Hugging Face `tokenizers` uses Oniguruma; the pre-tokenisation
// patterns of GPT-2 and Llama-3 mean the same in both (Perl-style leftmost, backtracking).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace concord::text {

class Regex {
 public:
  /// Compiles `pattern`; a bad pattern throws FormatError whose message starts with `where`
  /// (e.g. "tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex").
  explicit Regex(std::string_view pattern, std::string_view where = "regex");
  ~Regex();
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  /// A regex that matches `literal` exactly (metacharacters quoted).
  static Regex literal(std::string_view literal, std::string_view where = "regex");

  /// Finds the first match in `text` at or after byte `start`; returns false when there is none.
  /// `text` must be well-formed UTF-8 (callers sanitise first; see utf8.h) and `start` a
  /// character boundary. A pattern that exceeds PCRE2's match limit throws concord::Error.
  bool find(std::string_view text, size_t start, size_t& match_begin, size_t& match_end) const;

  /// Calls fn(begin, end) for every non-empty, non-overlapping match, left to right.
  template <typename Fn>
  void for_each_match(std::string_view text, Fn&& fn) const {
    size_t pos = 0, b = 0, e = 0;
    while (pos <= text.size() && find(text, pos, b, e)) {
      if (e == b) {  // an empty match: step one character and look again
        if (b >= text.size()) break;
        pos = b + 1;
        while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xC0) == 0x80) ++pos;
        continue;
      }
      fn(b, e);
      pos = e;
    }
  }

  const std::string& pattern() const { return pattern_; }
  bool jit() const { return jit_; }

 private:
  Regex() = default;
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
  bool jit_ = false;
};

}  // namespace concord::text
