#include "concord/text/unicode.h"

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <vector>

#include "concord/core/error.h"
#include "concord/text/utf8.h"

namespace concord::text::unicode {

namespace {

bool is_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

const UNormalizer2* instance(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormalForm::nfc: n = unorm2_getNFCInstance(&status); break;
    case NormalForm::nfd: n = unorm2_getNFDInstance(&status); break;
    case NormalForm::nfkc: n = unorm2_getNFKCInstance(&status); break;
    case NormalForm::nfkd: n = unorm2_getNFKDInstance(&status); break;
  }
  CONCORD_CHECK(U_SUCCESS(status) && n, "ICU: no normalizer instance: ", u_errorName(status));
  return n;
}

std::vector<UChar> to_utf16(std::string_view s) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  u_strFromUTF8(nullptr, 0, &length, s.data(), static_cast<int32_t>(s.size()), &status);
  std::vector<UChar> out(static_cast<size_t>(length) + 1);
  status = U_ZERO_ERROR;
  u_strFromUTF8(out.data(), static_cast<int32_t>(out.size()), &length, s.data(),
                static_cast<int32_t>(s.size()), &status);
  CONCORD_CHECK(U_SUCCESS(status), "ICU: UTF-8 to UTF-16 failed: ", u_errorName(status));
  out.resize(static_cast<size_t>(length));
  return out;
}

std::string to_utf8(const std::vector<UChar>& s) {
  UErrorCode status = U_ZERO_ERROR;
  int32_t length = 0;
  u_strToUTF8(nullptr, 0, &length, s.data(), static_cast<int32_t>(s.size()), &status);
  std::string out(static_cast<size_t>(length) + 1, '\0');
  status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &length, s.data(),
              static_cast<int32_t>(s.size()), &status);
  CONCORD_CHECK(U_SUCCESS(status), "ICU: UTF-16 to UTF-8 failed: ", u_errorName(status));
  out.resize(static_cast<size_t>(length));
  return out;
}

}  // namespace

std::string normalize(std::string_view s, NormalForm form) {
  if (is_ascii(s)) return std::string(s);  // every normal form of ASCII is itself
  const UNormalizer2* n = instance(form);
  const std::vector<UChar> in = to_utf16(s);
  UErrorCode status = U_ZERO_ERROR;
  const int32_t length =
      unorm2_normalize(n, in.data(), static_cast<int32_t>(in.size()), nullptr, 0, &status);
  std::vector<UChar> out(static_cast<size_t>(length) + 1);
  status = U_ZERO_ERROR;
  unorm2_normalize(n, in.data(), static_cast<int32_t>(in.size()), out.data(),
                   static_cast<int32_t>(out.size()), &status);
  CONCORD_CHECK(U_SUCCESS(status), "ICU: normalisation failed: ", u_errorName(status));
  out.resize(static_cast<size_t>(length));
  return to_utf8(out);
}

std::string lowercase(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c));
      ++i;
      continue;
    }
    const char32_t cp = utf8::next(s, i);
    if (cp == 0x130) {  // SpecialCasing: LATIN CAPITAL LETTER I WITH DOT ABOVE -> i + U+0307
      out.push_back('i');
      utf8::append(out, 0x307);
      continue;
    }
    utf8::append(out, static_cast<char32_t>(u_tolower(static_cast<UChar32>(cp))));
  }
  return out;
}

}  // namespace concord::text::unicode
