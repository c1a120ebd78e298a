// `concord quickstart`: every available stage of the pipeline in order, each on built-in data,
// each in its own run folder, and one report.md that links them. A stage that a later layer
// provides is listed as not yet available, never faked.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "concord/core/report.h"

namespace concord::tasks {

struct Stage {
  std::string name;
  std::string what;
  /// Runs the stage in `dir`, writes its own report there, returns a one-line summary.
  std::function<std::string(RunDirectory& dir)> run;
  std::string unavailable;  ///< non-empty: the stage is not in this build, and why
};

/// `quick`: every stage at a seconds-long size (tests).
std::vector<Stage> quickstart_stages(const std::filesystem::path& out, bool quick = false);

/// Runs the stages into `out`; returns the path of the top report. A LibTorch error inside is a
/// TorchError.
std::filesystem::path run_quickstart(const std::filesystem::path& out, bool quick = false);

}  // namespace concord::tasks
