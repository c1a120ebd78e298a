// Quickstart stage `data`: the built-in corpus through the foundation's data path (JSONL,
// tokenizer, token shards, block packing), with a report of what came out.
#pragma once
#include "concord/tasks/quickstart.h"

namespace concord::tasks {
Stage data_stage();
}
