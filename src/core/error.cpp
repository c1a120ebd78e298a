#include "concord/core/error.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

namespace concord {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::generic: return "error";
    case ErrorKind::format: return "format";
    case ErrorKind::config: return "config";
    case ErrorKind::io: return "io";
    case ErrorKind::unsupported: return "unsupported";
    case ErrorKind::torch: return "torch";
  }
  return "?";
}

namespace detail {

void rethrow_translated(std::string_view operation, const std::exception& e) {
  // c10::Error is the base of LibTorch's IndexError, ValueError, TypeError, NotImplementedError
  // and OutOfMemoryError; std::bad_alloc and the like are not LibTorch's and pass through.
  if (dynamic_cast<const c10::Error*>(&e) != nullptr) {
    throw TorchError(std::string(operation) + ": " + one_line_message(e));
  }
  throw;
}

}  // namespace detail

std::string one_line_message(const std::exception& e) {
  std::string msg;
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    msg = c10_error->what_without_backtrace();
  } else {
    msg = e.what();
  }
  // Keep the first line: the rest is a backtrace or a note meant for developers.
  if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);
  while (!msg.empty() && (msg.back() == ' ' || msg.back() == '\r')) msg.pop_back();
  return msg;
}

std::string json_quoted(std::string_view s) {
  return nlohmann::json(std::string(s))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace concord
