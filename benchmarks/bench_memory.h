// Memory figures of the benchmark's own process, read from /proc/self/status.
#pragma once
#include <cstdint>
#include <fstream>
#include <string>

namespace concord::bench {

/// A field of /proc/self/status ("VmRSS", "VmHWM", "RssFile", ...) in bytes (the kernel reports
/// kB); -1 when the field is absent.
inline int64_t status_bytes(const char* field) {
  std::ifstream status("/proc/self/status");
  const std::string key = std::string(field) + ":";
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(key.size())) * 1024;
  }
  return -1;
}

}  // namespace concord::bench
