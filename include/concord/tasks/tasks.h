// The tasks `concord run` can run, keyed by the config's "task" (DESIGN.md's list). A task that a
// later layer provides is listed with the reason it is not in this build yet, so a user gets a
// clear answer instead of "unknown task".
#pragma once
#include <functional>
#include <string>

#include "concord/core/config.h"
#include "concord/core/registry.h"
#include "concord/core/report.h"

namespace concord::tasks {

struct Task {
  std::string summary;
  /// Keys of the task's config (the common keys task/out_dir/seed are added by `run`).
  std::function<ConfigSchema()> schema;
  /// Runs the task in `dir` with the resolved config; adds its results to `report`.
  std::function<void(const Json& config, RunDirectory& dir, Report& report)> run;
  /// Non-empty when the task is not in this build: says what is missing.
  std::string unavailable;
};

/// Every task, available or not.
const Registry<Task>& task_registry();

/// The keys every run config has: task, out_dir, seed.
ConfigSchema common_run_schema();

/// Loads RUN_CONFIG, applies overrides, runs the task into `out_dir` (or the config's out_dir).
/// Returns the run folder.
std::string run_task(const std::string& config_path, const std::vector<std::string>& overrides,
                     const std::string& out_dir, bool resume);

}  // namespace concord::tasks
