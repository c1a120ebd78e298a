// Task `tokenize`: a JSONL corpus of {"text"} records -> pre-tokenised shards (data/token_shard.h)
// that `pretrain` memory-maps.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task tokenize_task();
}
