// Task `grape`: GRAPE response selection ("The Best Instruction-Tuning Data are Those That Fit",
// arXiv 2502.04194; docs/grape.md). Scores every candidate of a pool file with the target base
// model (concord/grape/score.h), sharded over ranks launched as torchrun launches them, merges
// the parts, selects per instruction by the configured mode (concord/grape/select.h) and writes
// scores.jsonl, selected.jsonl (prompt/completion records the `sft` task trains on),
// selection.json, metrics and a report with tables and charts.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task grape_task();
}
