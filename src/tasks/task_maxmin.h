// The MaxMin-RLHF miniature (concord/rlhf/maxmin_experiment.h) as the `maxmin_experiment` task
// and as the quickstart's `maxmin` stage; both write results.json, per-group tables and charts.
#pragma once
#include "concord/tasks/quickstart.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {

Task maxmin_experiment_task();

/// The quickstart stage: EM on built-in two-group preferences, then single-reward PPO and MaxMin
/// PPO, per-group win rates and true rewards: 3 seeds (quick), 5 (full); one small seed (smoke).
Stage maxmin_stage(QuickstartSize size);

}  // namespace concord::tasks
