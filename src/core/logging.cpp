#include "concord/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <string>

#include "concord/core/shard.h"

namespace concord {

int process_rank() { return static_cast<int>(process_shard().rank); }
int process_world_size() { return static_cast<int>(process_shard().world_size); }

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
