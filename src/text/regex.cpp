#define PCRE2_CODE_UNIT_WIDTH 8
#include "concord/text/regex.h"

#include <pcre2.h>

#include "concord/core/error.h"

namespace concord::text {

namespace {

// Bounds on one match attempt, so a pathological pattern from an untrusted tokenizer.json fails
// with an error instead of running for minutes (PCRE2's defaults are 10M and unlimited).
constexpr uint32_t kMatchLimit = 5'000'000;
constexpr uint32_t kDepthLimit = 100'000;

// Per-thread match state: PCRE2 match data and JIT stacks are not thread-safe, compiled code is.
struct ThreadState {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_data* data = nullptr;  // 1 pair of offsets is all find() needs
  ThreadState() {
    context = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(context, kMatchLimit);
    pcre2_set_depth_limit(context, kDepthLimit);
    // The default 32 KiB JIT stack overflows on long whitespace runs with \s+(?!\S).
    jit_stack = pcre2_jit_stack_create(64 * 1024, 8 * 1024 * 1024, nullptr);
    if (jit_stack) pcre2_jit_stack_assign(context, nullptr, jit_stack);
    data = pcre2_match_data_create(1, nullptr);
  }
  ~ThreadState() {
    pcre2_match_data_free(data);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  return n < 0 ? "PCRE2 error " + std::to_string(code)
               : std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(std::string_view pattern, std::string_view where) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // \C (one code unit) is refused: a match could end inside a character, and the text handed on
  // (a Replace normalizer's output, a Split piece) would no longer be the well-formed UTF-8 that
  // find(), the normalizers and the BPE model rely on.
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &error, &offset,
                                   nullptr);
  if (!code) {
    fail_format(std::string(where), "bad regular expression at offset ", offset, ": ",
                pcre2_message(error));
  }
  code_ = std::make_unique<Code>();
  code_->code = code;
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

Regex::~Regex() = default;
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;

Regex Regex::literal(std::string_view literal, std::string_view where) {
  // \Q...\E quotes everything except a literal "\E", which is spliced in escaped.
  std::string pattern;
  size_t pos = 0;
  while (true) {
    const size_t e = literal.find("\\E", pos);
    pattern += "\\Q";
    pattern.append(literal.substr(pos, e == std::string_view::npos ? e : e - pos));
    pattern += "\\E";
    if (e == std::string_view::npos) break;
    pattern += "\\\\E";
    pos = e + 2;
  }
  return Regex(pattern, where);
}

bool Regex::find(std::string_view text, size_t start, size_t& match_begin,
                 size_t& match_end) const {
  ThreadState& state = thread_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  int rc;
  if (jit_) {
    rc = pcre2_jit_match(code_->code, subject, text.size(), start, 0, state.data, state.context);
  } else {
    rc = pcre2_match(code_->code, subject, text.size(), start, PCRE2_NO_UTF_CHECK, state.data,
                     state.context);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0 && rc != PCRE2_ERROR_NOMEMORY) {
    fail("regex /", pattern_, "/: ", pcre2_message(rc));
  }
  if (rc < 0) fail("regex /", pattern_, "/: out of memory (", pcre2_message(rc), ")");
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.data);
  match_begin = ovector[0];
  match_end = ovector[1];
  if (match_end < match_begin) match_end = match_begin;  // \K can make end < start
  return true;
}

}  // namespace concord::text
