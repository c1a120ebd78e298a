// The report of a PanGu-π architecture ablation (concord/train/ablation.h), shared by the
// `pangu_ablation` task and the quickstart's `pretrain` stage: results.json, tables of loss,
// size and latency, and charts of the loss curves and of the per-layer feature diversity.
#pragma once
#include <vector>

#include "concord/core/report.h"
#include "concord/train/ablation.h"

namespace concord::tasks {

void report_ablation(const std::vector<train::VariantResult>& results, RunDirectory& dir,
                     Report& report);

}  // namespace concord::tasks
