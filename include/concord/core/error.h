// Errors. Library code throws; only drivers turn an exception into a one-line message and a
// non-zero exit status (see concord::one_line_message).
//
// One family reaches a user of Concord's API: concord::Error, whose kind() says which of the
// cases below it is, each also a class of its own so a caller can catch the ones it handles:
//
//   Error             bad input that fits none of the others (a CONCORD_CHECK)
//   FormatError       a file from outside is malformed; the message names file and line or key
//     ConfigError     a run or model config: unknown key (with "did you mean"), wrong type,
//                     value out of its declared choices or range, bad --set override, unknown
//                     registry name (task, protocol, selection mode, ...)
//   IoError           a file or folder is missing or cannot be read or written
//   UnsupportedError  a known feature this build does not have (a planned task, ...)
//   TorchError        LibTorch failed inside a Concord call (a c10::Error: a shape mismatch, an
//                     index out of range, CUDA out of memory); the message names the operation
//
// LibTorch's own c10::Error is translated where it crosses into Concord's API, with
// translate_torch_errors("lm::generate", [&] { ... }), so a caller needs one catch clause.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace concord {

enum class ErrorKind { generic, format, config, io, unsupported, torch };

/// "error", "format", "config", "io", "unsupported", "torch".
const char* error_kind_name(ErrorKind kind);

/// Base of every error Concord throws.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::generic)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

/// A file from outside (JSONL, safetensors, tokenizer.json, config) is malformed. The message
/// names the file and, where there is one, the line or key.
class FormatError : public Error {
 public:
  explicit FormatError(const std::string& message) : Error(message, ErrorKind::format) {}

 protected:
  FormatError(const std::string& message, ErrorKind kind) : Error(message, kind) {}
};

/// A config key or value is wrong: the message names the source (file, or "--set k=v") and the
/// key path.
class ConfigError : public FormatError {
 public:
  explicit ConfigError(const std::string& message) : FormatError(message, ErrorKind::config) {}
};

/// A file or folder is missing, unreadable or unwritable; the message names it.
class IoError : public Error {
 public:
  explicit IoError(const std::string& message) : Error(message, ErrorKind::io) {}
};

/// A feature Concord knows of but this build does not provide.
class UnsupportedError : public Error {
 public:
  explicit UnsupportedError(const std::string& message) : Error(message, ErrorKind::unsupported) {}
};

/// A LibTorch error (c10::Error) that escaped a public Concord call: "<operation>: <LibTorch's
/// first line>".
class TorchError : public Error {
 public:
  explicit TorchError(const std::string& message) : Error(message, ErrorKind::torch) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

/// Called from a catch block: throws TorchError for a c10::Error, else rethrows what is caught.
[[noreturn]] void rethrow_translated(std::string_view operation, const std::exception& e);
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

/// Throws concord::ConfigError naming `source` (a file, "--set k=v", ...) first.
template <typename... Args>
[[noreturn]] void fail_config(const std::string& source, Args&&... args) {
  throw ConfigError(detail::concat(source, ": ", std::forward<Args>(args)...));
}

/// Throws concord::IoError naming `path` first.
template <typename... Args>
[[noreturn]] void fail_io(const std::string& path, Args&&... args) {
  throw IoError(detail::concat(path, ": ", std::forward<Args>(args)...));
}

/// Throws concord::UnsupportedError with the streamed arguments as its message.
template <typename... Args>
[[noreturn]] void fail_unsupported(Args&&... args) {
  throw UnsupportedError(detail::concat(std::forward<Args>(args)...));
}

/// Runs `f()` and returns what it returns; a LibTorch c10::Error escaping it is rethrown as
/// TorchError "<operation>: <LibTorch's first line>" (the backtrace dropped). Concord's own
/// errors and any other exception pass through unchanged. Public entry points whose work
/// happens in LibTorch wrap their body in it:
///
///   std::vector<Generation> generate(CausalLM model, ...) {
///     return translate_torch_errors("lm::generate", [&] { return generate_impl(model, ...); });
///   }
template <typename F>
decltype(auto) translate_torch_errors(std::string_view operation, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    detail::rethrow_translated(operation, e);
  }
}

/// The message of any exception on one line: LibTorch's c10::Error carries a C++ backtrace after
/// its first line, which a user of the command line never needs.
std::string one_line_message(const std::exception& e);

/// A string from a file (a key, a tensor or token name) as an error message shows it: JSON-quoted,
/// so one holding a newline or a quote still gives a one-line, unambiguous message (fuzzing found
/// names with "\n" escapes that split one); invalid UTF-8 shows as U+FFFD.
std::string json_quoted(std::string_view s);

}  // namespace concord

/// Checks user input: throws concord::Error with the streamed message when `cond` is false.
#define CONCORD_CHECK(cond, ...)                 \
  do {                                           \
    if (!(cond)) ::concord::fail(__VA_ARGS__);   \
  } while (0)
