// A request to stop a long job cleanly: SIGINT or SIGTERM (a scheduler preempting the job,
// Ctrl-C) is recorded, and loops that can stop at a safe point (the Trainer after a step: it
// writes a checkpoint, then throws Stopped) look at it. The handler only stores the signal
// number, the one thing a handler may safely do. A second SIGINT while a stop is pending
// restores the default action and re-raises it, so a double Ctrl-C still ends a stuck job.
//
// The library installs nothing by itself: the `concord` driver calls install_stop_handlers(),
// and an embedding program may do the same or call request_stop() from its own handler.
#pragma once
#include <string>

#include "concord/core/error.h"

namespace concord {

/// Routes SIGINT and SIGTERM to request_stop() (idempotent).
void install_stop_handlers();
/// Records a stop request for `signal` (the first request wins). Async-signal-safe.
void request_stop(int signal) noexcept;
/// The pending request's signal number, or 0.
int stop_signal() noexcept;
/// Forgets a pending request.
void clear_stop() noexcept;
/// "SIGINT", "SIGTERM" or "signal N".
std::string signal_name(int signal);

/// Thrown by a loop that stopped at a safe point on request; a driver exits with
/// exit_status() (128 + the signal: 130 for SIGINT, 143 for SIGTERM).
class Stopped : public Error {
 public:
  Stopped(const std::string& message, int signal) : Error(message), signal_(signal) {}
  int signal() const noexcept { return signal_; }
  int exit_status() const noexcept { return 128 + signal_; }

 private:
  int signal_;
};

}  // namespace concord
