#include "concord/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <string>

namespace concord {

static int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end && *end == '\0') ? static_cast<int>(n) : fallback;
}

int process_rank() { return env_int("RANK", 0); }
int process_world_size() { return env_int("WORLD_SIZE", 1); }

void init_logging() {
  // Logs go to stderr: stdout is kept for results a user may pipe (`concord params`).
  auto logger = spdlog::get("concord");
  if (!logger) logger = spdlog::stderr_color_mt("concord");
  const int rank = process_rank();
  const int world = process_world_size();
  if (world > 1) {
    logger->set_pattern("[%H:%M:%S] [rank " + std::to_string(rank) + "] [%^%l%$] %v");
  } else {
    logger->set_pattern("[%H:%M:%S] [%^%l%$] %v");
  }
  auto level = spdlog::level::info;
  if (const char* v = std::getenv("CONCORD_LOG_LEVEL"); v && *v) {
    level = spdlog::level::from_str(v);
  }
  if (rank != 0 && level < spdlog::level::warn) level = spdlog::level::warn;
  logger->set_level(level);
  spdlog::set_default_logger(logger);
}

}  // namespace concord
