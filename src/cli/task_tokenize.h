// Task `tokenize`: a JSONL corpus of {"text"} records -> pre-tokenised shards (data/token_shard.h)
// that `pretrain` memory-maps.
#pragma once
#include "tasks.h"

namespace concord::cli {
Task tokenize_task();
}
