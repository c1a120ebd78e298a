// The GRAPE miniature experiment (concord/grape/experiment.h) as a `concord run` task
// (`grape_experiment`) and as the quickstart's `grape` stage; both write the same report.
#pragma once
#include "concord/grape/experiment.h"
#include "concord/tasks/quickstart.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {

Task grape_experiment_task();

/// The quickstart stage: GRAPE against random on upper-case instructions, 3 seeds, about
/// 5 minutes (full size); skipped at quick size, where the base model cannot learn the tasks.
Stage grape_stage(QuickstartSize size);

/// results.json, tables and a chart of an experiment's results.
void report_grape_experiment(const grape::GrapeExperimentResult& result,
                             const grape::GrapeExperimentOptions& options, RunDirectory& dir,
                             Report& report);

}  // namespace concord::tasks
