// libFuzzer target: tokenizer.json parsing and encoding/decoding with the parsed tokenizer.
// Any input must end in a tokenizer or a concord::Error (FormatError included): no crash, no
// other exception, no hang, no unbounded allocation.
//
// Input: tokenizer.json [0x1E text]. A JSON text never holds a raw 0x1E byte, so everything after
// the first one is text to encode: arbitrary bytes, so malformed and odd UTF-8 (surrogates,
// overlongs, combining marks, ligatures, Hangul, U+0130) goes through the repair step into the
// normalizers (NFC/NFD/NFKC/NFKD, Lowercase, Replace, Prepend) and the BPE model (with CLIP's
// end_of_word_suffix). Without a text part the input itself (JSON) is encoded. The text is also
// run through each normal form and the lower-casing directly (concord/text/unicode.h): their
// output must be well-formed UTF-8 and normalising twice must change nothing.
// Seeds: fuzz/corpus/tokenizer_json (CLIP's tokenizer.json from
// tests/fixtures/diffusion/clip-tokenizer-json with texts appended, and small hand-written ones).
//
// Build and run: scripts/fuzz.sh 60 fuzz_tokenizer_json
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "concord/text/unicode.h"
#include "concord/text/utf8.h"

namespace {

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

// The normalizers' own contract: well-formed UTF-8 in, well-formed UTF-8 out, forms idempotent.
void check_unicode(std::string_view raw) {
  namespace u = concord::text::unicode;
  const std::string text = concord::text::utf8::replace_invalid(raw);
  for (auto form : {u::NormalForm::nfc, u::NormalForm::nfd, u::NormalForm::nfkc, u::NormalForm::nfkd}) {
    const std::string once = u::normalize(text, form);
    check(concord::text::utf8::is_valid(once), "normal form is not valid UTF-8");
    check(u::normalize(once, form) == once, "normal form is not idempotent");
  }
  check(concord::text::utf8::is_valid(u::lowercase(text)), "lower-cased text is not valid UTF-8");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t sep = input.find('\x1e');
  const std::string_view json = input.substr(0, sep);
  const std::string_view text =
      sep == std::string_view::npos ? input.substr(0, 512) : input.substr(sep + 1, 2048);
  try {
    check_unicode(text);
  } catch (const concord::Error&) {
    // An ICU failure on valid input is reported as concord::Error; not a crash.
  }
  std::unique_ptr<concord::text::BpeTokenizer> tok;
  try {
    tok = concord::text::BpeTokenizer::from_json(json, "fuzz.json");
  } catch (const concord::Error&) {
    return 0;
  }
  static const std::string texts[] = {
      "Hello world, it's 2024!  Salam dünya. Сәлем әлем. ياخشىمۇسىز 😀\n\tx",
      "bad \xC3\x28 utf8 \xED\xA0\x80 \xF4\x90\x80\x80 \xC0\xAF \xF0\x9F\x98",
      "<s> ab </s><|endoftext|> ▁a▁b <0x41> <|startoftext|>A PHOTO<|endoftext|>",
      // ligature (NFKC), Hangul jamo (NFC composes), e + combining acute, Å, U+FDFA (NFKD: 18),
      // U+0130 (lower-cases to two characters), final sigma, a BOM and a NUL
      "\xEF\xAC\x81 \xE1\x84\x80\xE1\x85\xA1 e\xCC\x81 \xC3\x85ngstr\xC3\xB6m \xEF\xB7\xBA "
      "\xC4\xB0STANBUL \xCE\xA3\xCE\x9F\xCE\xA6\xCE\x9F\xCE\xA3 \xEF\xBB\xBF" + std::string(1, '\0'),
      std::string(300, ' ') + std::string(300, 'a'),
  };
  try {
    for (const auto& t : texts) {
      for (bool special : {false, true}) {
        const auto ids = tok->encode(t, special);
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
      }
    }
    // The fuzzed text: arbitrary bytes through the whole pipeline.
    const auto ids = tok->encode(text, true);
    for (auto id : ids) check(id >= 0 && id < tok->vocab_size(), "id outside the vocabulary");
    (void)tok->decode(ids, true);
  } catch (const concord::Error&) {
    // Runtime limits (regex match limit) and ids of a post-processor template that are not
    // tokens surface as concord::Error; that is a clean failure, not a bug.
  }
  return 0;
}
