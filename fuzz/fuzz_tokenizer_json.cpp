// libFuzzer target: tokenizer.json parsing and encoding/decoding with the parsed tokenizer.
// Any input must end in a tokenizer or a concord::Error (FormatError included): no crash, no
// other exception, no hang, no unbounded allocation.
//
// By hand (the text sources need no LibTorch):
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//     fuzz/fuzz_tokenizer_json.cpp src/text/bpe_tokenizer.cpp src/text/regex.cpp \
//     src/text/utf8.cpp -lpcre2-8 -o /tmp/fuzz_tokenizer_json
//   /tmp/fuzz_tokenizer_json -max_total_time=60 -max_len=8192 /tmp/corpus fuzz/corpus/tokenizer_json
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<concord::text::BpeTokenizer> tok;
  try {
    tok = concord::text::BpeTokenizer::from_json(input, "fuzz.json");
  } catch (const concord::Error&) {
    return 0;
  }
  static const std::string texts[] = {
      "Hello world, it's 2024!  Salam dünya. Сәлем әлем. ياخشىمۇسىز 😀\n\tx",
      "bad \xC3\x28 utf8 \xF0\x9F\x98",
      "<s> ab </s><|endoftext|> ▁a▁b <0x41>",
      std::string(300, ' ') + std::string(300, 'a'),
  };
  try {
    for (const auto& text : texts) {
      for (bool special : {false, true}) {
        const auto ids = tok->encode(text, special);
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
      }
    }
    // The input itself as text: arbitrary bytes through the whole pipeline.
    (void)tok->encode(input.substr(0, 512), true);
  } catch (const concord::Error&) {
    // Runtime limits (regex match limit) and ids of a post-processor template that are not
    // tokens surface as concord::Error; that is a clean failure, not a bug.
  }
  return 0;
}
