// libFuzzer target: JSONL parsing and record validation from a memory buffer.
//
// The first byte picks the record kind (text, sft, preference, grape_pool) and the bad-record
// policy; the rest is the file. The reader must either accept a line or report it as a
// concord::FormatError naming the line: any other exception, a crash, a hang or unbounded
// memory is a bug. Accepted SFT records are also rendered and tokenised with every chat
// template (byte tokenizer), and accepted GRAPE pools deduplicated, checking invariants.
//
// Build by hand (the library is compiled by gcc without sanitizers, so the sources under test
// are compiled into the fuzzer):
//   clang++-14 -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude
//     fuzz/fuzz_jsonl.cpp src/data/jsonl.cpp src/data/records.cpp src/data/grape_pool.cpp
//     src/data/chat_template.cpp src/text/byte_tokenizer.cpp src/text/tokenizer.cpp
//     src/core/files.cpp -o /tmp/fuzz_jsonl
//   /tmp/fuzz_jsonl -max_total_time=60 -max_len=4096 fuzz/corpus/jsonl
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "concord/core/error.h"
#include "concord/data/chat_template.h"
#include "concord/data/grape_pool.h"
#include "concord/data/jsonl.h"
#include "concord/data/records.h"
#include "concord/text/byte_tokenizer.h"

using namespace concord;
using namespace concord::data;

namespace {

void check(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

void run(RecordKind kind, const JsonlOptions& opt, const std::string& text) {
  std::istringstream in(text);
  BadRecords bad;
  switch (kind) {
    case RecordKind::sft: {
      static const text::ByteTokenizer tok;
      for (const auto& r : read_sft_records(in, "fuzz.jsonl", opt, &bad)) {
        check(r.is_chat() || r.messages.empty(), "chat record shape");
        for (const auto& name : chat_template_names()) {
          TokenizedSample s = make_chat_template(name)->tokenize(tok, r.conversation());
          check(s.ids.size() == s.train.size(), "ids and mask lengths differ");
          check(s.prompt_length() <= static_cast<int64_t>(s.ids.size()), "prompt length");
        }
      }
      break;
    }
    case RecordKind::grape_pool: {
      auto pools = read_grape_pools(in, "fuzz.jsonl", opt, &bad);
      for (auto& p : pools) {
        check(!p.responses.empty(), "empty pool accepted");
        size_t before = p.responses.size();
        int64_t removed = dedup_responses(p, true);
        check(p.responses.size() + static_cast<size_t>(removed) == before, "dedup count");
        check(!p.responses.empty(), "dedup emptied a pool");
      }
      break;
    }
    default:
      validate_records(in, "fuzz.jsonl", kind, opt, &bad);
  }
  check(opt.on_bad == BadRecordPolicy::skip || bad.count == 0, "stop policy skipped a line");
  check(bad.examples.size() <= opt.max_examples, "examples not capped");
  for (const auto& e : bad.examples) {
    check(e.rfind("fuzz.jsonl:", 0) == 0, "message does not name the file");
    check(e.find('\n') == std::string::npos, "message spans lines");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const RecordKind kinds[] = {RecordKind::text, RecordKind::sft, RecordKind::preference,
                                     RecordKind::grape_pool};
  RecordKind kind = kinds[data[0] & 3];
  JsonlOptions opt;
  opt.on_bad = (data[0] & 4) ? BadRecordPolicy::skip : BadRecordPolicy::stop;
  opt.max_examples = 3;
  opt.max_line_bytes = 1024;  // small, so the fuzzer reaches the over-long-line path
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    run(kind, opt, text);
  } catch (const FormatError& e) {
    check(opt.on_bad == BadRecordPolicy::stop, "FormatError escaped the skip policy");
    std::string what = e.what();
    check(what.rfind("fuzz.jsonl:", 0) == 0, "message does not name the file");
    check(what.find('\n') == std::string::npos, "message spans lines");
  }
  return 0;
}
