// Unicode normalisation and case mapping for the tokenizers' normalizers, behind a small
// interface of ours (ICU does the work; Debian: libicu-dev). Input is well-formed UTF-8 (the
// tokenizers repair malformed input first, utf8.h).
//
// Lower-casing follows Hugging Face `tokenizers`' Lowercase normalizer, which maps each character
// on its own with Rust's char::to_lowercase: the simple Unicode mapping, plus the one
// unconditional multi-character mapping of SpecialCasing.txt, U+0130 'İ' -> "i̇" (i + U+0307).
// No context rules (a final sigma stays σ), no locale (Turkish I still lower-cases to 'i').
#pragma once
#include <string>
#include <string_view>

namespace concord::text::unicode {

enum class NormalForm { nfc, nfd, nfkc, nfkd };

/// `s` in the normal form; ASCII text comes back unchanged without a conversion.
std::string normalize(std::string_view s, NormalForm form);

/// `s` lower-cased character by character (see the file comment).
std::string lowercase(std::string_view s);

}  // namespace concord::text::unicode
