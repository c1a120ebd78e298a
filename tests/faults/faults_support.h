// What the fault tests share: tiny inputs for every training task and the polling of a run
// folder's checkpoints.
#pragma once
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "concord/core/files.h"
#include "test_support.h"

namespace concord::testing {

/// The step `run/checkpoints/latest` names (step-00000012 -> 12), or -1 when there is none yet.
inline int64_t latest_step(const std::filesystem::path& run) {
  std::error_code ec;
  const auto pointer = run / "checkpoints" / "latest";
  if (!std::filesystem::exists(pointer, ec)) return -1;
  std::string name;
  try {
    name = read_file(pointer);
  } catch (const std::exception&) {
    return -1;
  }
  const auto dash = name.find('-');
  if (dash == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(dash + 1));
  } catch (const std::exception&) {
    return -1;
  }
}

/// Polls every millisecond until `done()` or `seconds` pass; returns whether done() held.
template <typename F>
bool wait_until(F&& done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

}  // namespace concord::testing
