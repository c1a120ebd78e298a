// One PNG with several metrics of a run's metrics.jsonl as lines (the tasks' reports draw their
// training curves with it).
#pragma once
#include <string>
#include <vector>

#include "concord/core/report.h"

namespace concord::tasks {

/// Draws the metrics `names` of dir/metrics.jsonl into dir/charts/`file` against "step"; false
/// (nothing drawn) when none of them was logged.
bool chart_metrics_together(RunDirectory& dir, const std::string& file, const std::string& title,
                            const std::string& x_label, const std::string& y_label,
                            const std::vector<std::string>& names);

}  // namespace concord::tasks
