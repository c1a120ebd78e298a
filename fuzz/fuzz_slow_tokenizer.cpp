// libFuzzer target for a slow tokenizer's files (BpeTokenizer::from_slow_files, the layout of
// SDXL's tokenizer/ and tokenizer_2/): the input is split at 0x1E bytes (ASCII record separator;
// never in a JSON text, and byte-level vocabularies write control bytes as other characters) into
//   tokenizer_config.json 0x1E vocab.json 0x1E merges.txt [0x1E text to encode]
// which are written into a scratch folder (one per process, rewritten each run) and read back by
// from_slow_files. A tokenizer that loads then encodes a few fixed texts and the optional text
// (arbitrary bytes, so malformed UTF-8 reaches the repair step, CLIP's NFC and Lowercase
// normalizers and its end-of-word suffix), with and without specials, and decodes the ids.
// Bad files must end in concord::Error whose message is one line naming one of the three files;
// a crash, another exception, a sanitizer report, a hang or an unbounded allocation is a bug.
// Seeds: fuzz/corpus/slow_tokenizer (the fixture pipeline's two CLIP tokenizers, a GPT-2 class
// over the same files, a minimal one); dictionary: slow_tokenizer.dict.
// Build and run: scripts/fuzz.sh 60 fuzz_slow_tokenizer
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <string_view>
#include <vector>

#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;

namespace {

const fs::path& scratch() {
  static const concord::fuzz::Scratch s("fuzz_slow_tokenizer");
  return s.dir;
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (parts.size() < 3) {
    const size_t sep = input.find('\x1e', start);
    if (sep == std::string_view::npos) break;
    parts.push_back(input.substr(start, sep - start));
    start = sep + 1;
  }
  parts.push_back(input.substr(start));
  if (parts.size() < 3) return 0;
  const std::string_view text = parts.size() == 4 ? parts[3] : std::string_view();

  const fs::path& dir = scratch();
  write(dir / "tokenizer_config.json", parts[0]);
  write(dir / "vocab.json", parts[1]);
  write(dir / "merges.txt", parts[2]);

  std::unique_ptr<concord::text::BpeTokenizer> tok;
  try {
    tok = concord::text::BpeTokenizer::from_slow_files(dir);
  } catch (const concord::Error& e) {
    const std::string what = e.what();
    check(what.find('\n') == std::string::npos, "message spans lines:", what);
    check(what.find(dir.string()) != std::string::npos, "message names no file:", what);
    return 0;
  }
  static const std::string texts[] = {
      "A photo of an ASTRONAUT riding a horse, 4k!  <|startoftext|>x<|endoftext|> İstanbul",
      "bad \xC3\x28 utf8 \xED\xA0\x80 \xF4\x90\x80\x80 \xC0\xAF \xF0\x9F\x98",
      "\xEF\xAC\x81 \xE1\x84\x80\xE1\x85\xA1 e\xCC\x81 \xC3\x85ngstr\xC3\xB6m \xEF\xB7\xBA",
      std::string(200, ' ') + std::string(200, 'a') + "\t\n\r\v\f",
  };
  try {
    for (const auto& t : texts) {
      for (bool special : {false, true}) {
        const auto ids = tok->encode(t, special);
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
      }
    }
    const auto ids = tok->encode(text.substr(0, 1024), true);
    for (auto id : ids) check(id >= 0 && id < tok->vocab_size(), "id outside the vocabulary");
    (void)tok->decode(ids, false);
  } catch (const concord::Error&) {
    // Runtime limits (the regex match limit) surface as concord::Error: a clean failure.
  }
  return 0;
}
