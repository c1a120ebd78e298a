// Task `tumlu`: evaluates a causal language model on TUMLU-mini (docs/tumlu.md) through
// eval::CausalLmTumluModel, writing the benchmark's outputs layout and the TUMLU report
// (results.json, tables, per-language chart) into the run folder.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task tumlu_task();
}
