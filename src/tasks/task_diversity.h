// Task `diversity`: PanGu-π's feature-collapse analysis (arXiv 2312.17276, Section 3) for any
// causal LM: the distance d_M(H) of each layer's token features to the "all tokens equal"
// subspace, per layer, on a JSONL text file or the built-in corpus (concord/lm/diversity.h).
// Writes one metrics line per layer, diversity.json, a table and charts in report.md.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task diversity_task();
}
