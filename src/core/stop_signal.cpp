#include "concord/core/stop_signal.h"

#include <atomic>
#include <signal.h>

#include <csignal>

namespace concord {

namespace {

std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler needs a lock-free flag");

extern "C" void on_stop_signal(int signal) {
  if (signal == SIGINT && g_stop.load() != 0) {
    // Second Ctrl-C: give the signal its default action back and let it end the process.
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
    return;
  }
  request_stop(signal);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // reads and writes in flight carry on; the loop checks later
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

void request_stop(int signal) noexcept {
  int expected = 0;
  g_stop.compare_exchange_strong(expected, signal);
}

int stop_signal() noexcept { return g_stop.load(); }

void clear_stop() noexcept { g_stop.store(0); }

std::string signal_name(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(signal);
}

}  // namespace concord
