#include "concord/core/error.h"

#include <c10/util/Exception.h>

namespace concord {

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

}  // namespace concord
