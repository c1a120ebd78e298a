// The GRAPE miniature experiment (concord/grape/experiment.h) as a `concord run` task
// (`grape_experiment`) and as the quickstart's `grape` stage; both write the same report.
#pragma once
#include "concord/grape/experiment.h"
#include "concord/tasks/quickstart.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {

Task grape_experiment_task();

/// The quickstart stage: GRAPE against random, one seed, about a minute on 2 cores (`quick`:
/// seconds).
Stage grape_stage(bool quick);

/// results.json, tables and a chart of an experiment's results.
void report_grape_experiment(const grape::GrapeExperimentResult& result,
                             const grape::GrapeExperimentOptions& options, RunDirectory& dir,
                             Report& report);

}  // namespace concord::tasks
