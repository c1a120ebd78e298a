// The MaxMin-RLHF miniature (concord/rlhf/maxmin_experiment.h) as the `maxmin_experiment` task
// and as the quickstart's `maxmin` stage; both write results.json, per-group tables and charts.
#pragma once
#include "concord/tasks/quickstart.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {

Task maxmin_experiment_task();

/// The quickstart stage: EM on built-in two-group preferences, then single-reward PPO and MaxMin
/// PPO, per-group win rates and true rewards. One seed; `quick`: smaller, well under a minute.
Stage maxmin_stage(bool quick);

}  // namespace concord::tasks
