// Task `tumlu`: evaluates a causal language model on TUMLU-mini (docs/tumlu.md) through
// eval::CausalLmTumluModel, writing the benchmark's outputs layout and the TUMLU report
// (results.json, tables, per-language chart) into the run folder.
#pragma once
#include "tasks.h"

namespace concord::cli {
Task tumlu_task();
}
