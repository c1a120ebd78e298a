// UTF-8 helpers for the tokenizers. Concord's rule for malformed input: every maximal subpart of
// an ill-formed sequence becomes one U+FFFD (Unicode 15, §3.9 "U+FFFD Substitution of Maximal
// Subparts"), which is what Python's bytes.decode(errors="replace") and Rust's
// String::from_utf8_lossy do. Hugging Face `tokenizers` only accepts valid strings, so applying
// this replacement first gives the same ids as Python on the replaced text.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace concord::text::utf8 {

/// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

/// Length of the well-formed sequence starting at `s[i]`, or 0 when it is ill-formed; then
/// `*bad` (if given) receives the length of the maximal subpart to replace (at least 1).
size_t sequence_length(std::string_view s, size_t i, size_t* bad = nullptr);

/// True when `s` is well-formed UTF-8 (surrogates, overlongs and > U+10FFFF are not).
bool is_valid(std::string_view s);

/// `s` with each maximal ill-formed subpart replaced by U+FFFD.
std::string replace_invalid(std::string_view s);

/// Appends the UTF-8 encoding of `cp` (which must be a scalar value).
void append(std::string& out, char32_t cp);

/// Code point at `s[i]` of well-formed text; advances `i` past it.
char32_t next(std::string_view s, size_t& i);

/// Byte length of the character whose lead byte is `lead` in well-formed text.
inline size_t lead_length(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

}  // namespace concord::text::utf8
