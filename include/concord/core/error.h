// Errors. Library code throws; only drivers turn an exception into a one-line message and a
// non-zero exit status (see concord::one_line_message).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace concord {

/// Base of every error Concord throws on bad input.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file from outside (JSONL, safetensors, tokenizer.json, config) is malformed. The message
/// names the file and, where there is one, the line or key.
class FormatError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

/// Throws concord::Error with the streamed arguments as its message.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

/// Throws concord::FormatError naming `file` (and whatever follows) first.
template <typename... Args>
[[noreturn]] void fail_format(const std::string& file, Args&&... args) {
  throw FormatError(detail::concat(file, ": ", std::forward<Args>(args)...));
}

/// The message of any exception on one line: LibTorch's c10::Error carries a C++ backtrace after
/// its first line, which a user of the command line never needs.
std::string one_line_message(const std::exception& e);

}  // namespace concord

/// Checks user input: throws concord::Error with the streamed message when `cond` is false.
#define CONCORD_CHECK(cond, ...)                 \
  do {                                           \
    if (!(cond)) ::concord::fail(__VA_ARGS__);   \
  } while (0)
