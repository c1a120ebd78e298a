// Logging through spdlog, rank-aware: in a multi-process run only rank 0 logs at info level,
// other ranks log warnings and errors, each line tagged with its rank.
#pragma once
#include <spdlog/spdlog.h>

namespace concord {

/// Sets the default logger's pattern and level. Reads CONCORD_LOG_LEVEL (trace, debug, info,
/// warn, error, off) and RANK/WORLD_SIZE as torchrun sets them.
void init_logging();

/// This process's rank and world size as the launcher set them (0 and 1 when not distributed):
/// process_shard() (core/shard.h), which reads RANK and WORLD_SIZE.
int process_rank();
int process_world_size();

}  // namespace concord
