// libFuzzer target for SentencePiece `.model` files: the input is written into a scratch folder
// and loaded through concord_sentencepiece_shim's C ABI (include/concord/text/sentencepiece_shim.h),
// the same calls SentencePieceTokenizer makes, with its buffer protocol (a call answers the full
// length; a second call with a buffer that large fills it). A model that loads encodes a few fixed
// texts, every id must lie in [0, vocab size), decodes them, and reads back pieces, the special ids
// and control flags. A bad file must be refused with a message; a crash, a sanitizer report, a
// hang or an unbounded allocation is a bug.
//
// Why the C ABI and not SentencePieceTokenizer: the tokenizer dlopen()s the shim with
// RTLD_DEEPBIND (see sentencepiece_shim.h), which AddressSanitizer's runtime refuses, and
// libsentencepiece cannot share a process with LibTorch otherwise. This target links the shim
// (and so libsentencepiece) directly and never LibTorch. libsentencepiece and its protobuf are
// Debian's uninstrumented builds: ASan checks memory accesses in the shim and at its
// interceptors (memcpy, malloc), and coverage guides mutations only through the shim, so most of
// the model parser is fuzzed blind (docs/foundation.md, Known limits).
//
// Seeds: fuzz/corpus/sentencepiece (tiny unigram, BPE, char models trained with the
// sentencepiece package, one with a custom normalization rule set, and the test fixture's BPE
// with byte fallback).
// Build and run: scripts/fuzz.sh 60 fuzz_sentencepiece
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "concord/text/sentencepiece_shim.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;

namespace {

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

const fs::path& model_path() {
  static const concord::fuzz::Scratch scratch("fuzz_sentencepiece");
  static const fs::path path = scratch.dir / "fuzz.model";
  return path;
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

struct Free {
  void operator()(concord_spm* spm) const { concord_spm_free(spm); }
};

std::vector<int32_t> encode(const concord_spm* spm, std::string_view text) {
  std::vector<int32_t> ids(text.size() + 8);
  int64_t n = concord_spm_encode(spm, text.data(), text.size(), ids.data(), ids.size());
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(static_cast<size_t>(n));
    n = concord_spm_encode(spm, text.data(), text.size(), ids.data(), ids.size());
  }
  check(n >= -1 && n <= static_cast<int64_t>(ids.size()), "encode length out of range");
  ids.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return ids;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& path = model_path();
  write(path, std::string_view(reinterpret_cast<const char*>(data), size));
  char err[512];
  std::memset(err, 'x', sizeof(err));
  std::unique_ptr<concord_spm, Free> spm(concord_spm_load(path.c_str(), err, sizeof(err)));
  if (!spm) {
    check(std::memchr(err, '\0', sizeof(err)) != nullptr, "error message not terminated");
    check(err[0] != '\0', "load failed without a message");
    return 0;
  }
  const int32_t vocab = concord_spm_vocab_size(spm.get());
  check(vocab >= 0, "negative vocabulary size");
  for (int32_t id : {concord_spm_bos_id(spm.get()), concord_spm_eos_id(spm.get()),
                     concord_spm_pad_id(spm.get()), concord_spm_unk_id(spm.get())}) {
    check(id >= -1 && id < vocab, "special id outside the vocabulary", std::to_string(id));
  }
  static const std::string texts[] = {
      "The quick brown fox \xEF\xAC\x81x \xE2\x80\x94 A 123 \xF0\x9F\x98\x80 <s> </s> <unk>",
      "  leading and trailing  \t\n",
      "Az\xC9\x99rbaycan \xD2\x9A\xD0\xB0\xD0\xB7\xD0\xB0\xD2\x9B e\xCC\x81",
      std::string(300, 'a') + std::string(100, ' '),
      "",
  };
  for (const auto& text : texts) {
    const std::vector<int32_t> ids = encode(spm.get(), text);
    for (int32_t id : ids) check(id >= 0 && id < vocab, "encoded id outside the vocabulary");
    std::string out(ids.size() * 8 + 16, '\0');
    int64_t len = concord_spm_decode(spm.get(), ids.data(), ids.size(), out.data(), out.size());
    if (len > static_cast<int64_t>(out.size())) {
      out.resize(static_cast<size_t>(len));
      len = concord_spm_decode(spm.get(), ids.data(), ids.size(), out.data(), out.size());
    }
    check(len >= -1 && len <= static_cast<int64_t>(out.size()), "decode length out of range");
  }
  // Out-of-range ids are refused, not read.
  const int32_t bad[] = {-1, vocab, INT32_MAX};
  char sink[16];
  check(concord_spm_decode(spm.get(), bad, 3, sink, sizeof(sink)) == -1, "bad ids decoded");
  check(concord_spm_id_to_piece(spm.get(), vocab, sink, sizeof(sink)) == -1, "id past the end");
  check(concord_spm_is_control(spm.get(), -1) == 0, "id -1 is a control token");
  const int32_t shown = std::min<int32_t>(vocab, 512);
  for (int32_t id = 0; id < shown; ++id) {
    std::string piece(8, '\0');
    int64_t n = concord_spm_id_to_piece(spm.get(), id, piece.data(), piece.size());
    if (n > static_cast<int64_t>(piece.size())) {
      piece.resize(static_cast<size_t>(n));
      n = concord_spm_id_to_piece(spm.get(), id, piece.data(), piece.size());
    }
    check(n >= 0 && n <= static_cast<int64_t>(piece.size()), "piece length out of range");
    piece.resize(static_cast<size_t>(n));
    const int32_t back = concord_spm_piece_to_id(spm.get(), piece.data(), piece.size());
    check(back >= -1 && back < vocab, "piece_to_id outside the vocabulary");
    (void)concord_spm_is_control(spm.get(), id);
  }
  return 0;
}
