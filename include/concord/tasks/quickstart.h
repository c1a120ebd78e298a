// `concord quickstart`: every available stage of the pipeline in order, each on built-in data,
// each in its own run folder, and one report.md that links them. A stage that a later layer
// provides is listed as not yet available, never faked. Every figure a stage reports stands
// beside its baseline or chance level, with an interval where seeds or items give one.
#pragma once
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "concord/core/report.h"

namespace concord::tasks {

/// How much the quickstart runs (times on 2 CPU cores, after the build).
enum class QuickstartSize {
  smoke,  ///< seconds: every stage end to end at toy sizes; the figures mean nothing (tests)
  quick,  ///< under 3 minutes: each stage at the smallest size whose result means something
  full,   ///< under 10 minutes: larger runs and several seeds, with intervals
};

/// "smoke", "quick" or "full".
const char* quickstart_size_name(QuickstartSize size);

struct Stage {
  std::string name;
  std::string what;   ///< what the stage runs, in a line
  std::string shows;  ///< what a reader learns from its result, in a line, for newcomers
  /// Runs the stage in `dir`, writes its own report there, returns a one-line summary.
  std::function<std::string(RunDirectory& dir)> run;
  std::string unavailable;  ///< non-empty: the stage is not in this build, and why
  /// Non-empty: the stage does not fit this size with a result that means anything, and why
  /// (listed, not run: a figure from a model that has not learned the task would mislead).
  std::string skipped;
};

std::vector<Stage> quickstart_stages(const std::filesystem::path& out,
                                     QuickstartSize size = QuickstartSize::full);

struct QuickstartResult {
  std::filesystem::path report;  ///< out/report.md: every stage, linked
  /// The closing summary for a terminal: what ran, what each result shows, where to look.
  std::string summary;
};

/// Runs the stages into `out`, logging each stage's start, end and time (stage i of n). A
/// LibTorch error inside is a TorchError.
QuickstartResult run_quickstart(const std::filesystem::path& out,
                                QuickstartSize size = QuickstartSize::full);

}  // namespace concord::tasks
