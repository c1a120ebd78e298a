// The tasks layer: every task a run config can name (docs/architecture.md lists them), keyed by the config's
// "task", and run_task, which runs one from a config the way `concord run` does. It lives in the
// library so that a research program embedding Concord runs a task with one call:
//
//   #include "concord/tasks/tasks.h"
//   concord::init_runtime();                              // threads, logging (optional)
//   std::string dir = concord::tasks::run_task("configs/runs/grape.json",
//                                              {"top_k=2", "device=cuda"}, "runs/grape-k2");
//   // or the config itself, as JSON text:
//   concord::tasks::run_task(R"({"task": "tokenize", "input": "corpus.jsonl"})", {}, "runs/tok");
//
// A task that a later layer provides is listed with the reason it is not in this build yet, so a
// user gets a clear answer (an UnsupportedError) instead of "unknown task".
#pragma once
#include <functional>
#include <string>
#include <vector>

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
  /// In a job of several processes (WORLD_SIZE > 1): true when every rank writes its own part
  /// file into the run folder (core/shard.h: GRAPE scoring, TUMLU evaluation). Otherwise only
  /// rank 0 writes the run folder (its Trainers run data parallel, train/data_parallel.h) and
  /// the other ranks write into a scratch folder removed when the task ends.
  bool writes_rank_parts = false;
};

/// Every task, available or not.
const Registry<Task>& task_registry();

/// The keys every run config has: task, out_dir, seed.
ConfigSchema common_run_schema();

/// Runs the task a run config names and returns the run folder.
///
/// `config_json_or_path`: the path of a run-config file, or the config itself as JSON text (a
/// string whose first non-blank character is '{'; errors then name it "run config").
/// `overrides`: "a.b=value" assignments applied before validation (as `--set`).
/// `out_dir`: the run folder; empty: the config's out_dir, else runs/<task>-<time>.
/// `resume`: continue from the run folder's last checkpoint (training tasks).
///
/// Writes DIR/config.json (the resolved config), DIR/metrics.jsonl, DIR/report.md and charts.
/// Errors are concord::Errors: ConfigError (unknown key with "did you mean", wrong type, value
/// outside its choices or range, unknown task; naming the file and the key), IoError (a missing
/// or unreadable file), FormatError (malformed JSON or data, naming file and line),
/// UnsupportedError (a task not in this build), TorchError (LibTorch failed inside the task).
std::string run_task(const std::string& config_json_or_path,
                     const std::vector<std::string>& overrides = {},
                     const std::string& out_dir = "", bool resume = false);

/// run_task for a config already parsed; `source` names it in errors.
std::string run_task_json(Json config, const std::string& source,
                          const std::vector<std::string>& overrides = {},
                          const std::string& out_dir = "", bool resume = false);

}  // namespace concord::tasks
