// Internal text helpers of the eval layer: Python's notion of whitespace (the benchmark's
// scripts run str.strip() and re.sub(r"\s+", " ", ...) on str, whose \s is str.isspace()).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace concord::eval::detail {

/// str.isspace() for one code point (Python 3: bidirectional class WS, B or S, or category Zs).
inline bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

/// The number of code points in UTF-8 `s` (bytes that are not continuation bytes).
inline size_t code_points(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

/// `text` with invalid UTF-8 replaced (U+FFFD) so that code-point iteration and PCRE2 are safe.
std::string sanitize_utf8(std::string_view text);

/// re.sub(r"\s+", " ", text) with Python's \s on str.
std::string collapse_python_whitespace(std::string_view text);

/// Replaces every occurrence of `from` with `to`.
void replace_all(std::string& text, std::string_view from, std::string_view to);

}  // namespace concord::eval::detail
