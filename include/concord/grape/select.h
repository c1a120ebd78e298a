// GRAPE selection ("The Best Instruction-Tuning Data are Those That Fit", arXiv 2502.04194,
// the method section): given the scores s(x, y) of score.h, keep per instruction x
//
//   y* = argmax_{y in pool(x)} s(x, y)                                    (mode "grape")
//
// or its top k (the paper's UltraInteract setting keeps several responses per instruction), and
// the paper's baselines: "reverse" (argmin, Reverse-GRAPE), "random" (seeded), "longest" (most
// response tokens), "source" (every response of one named source: the strongest-model
// baseline) and "all" (every candidate). Modes come from a small registry keyed by name; an
// unknown name lists the valid ones.
//
// Every mode chooses among the candidates that were scored (not skipped as too long for the
// context or empty), so the baselines draw from the same candidates as GRAPE. Ties go to the
// candidate that comes first in the pool. "random" draws with std::mt19937_64 directly (no std
// distributions, whose output differs between standard libraries), from a stream seeded by the
// seed and the pool's id, so a pool's choice does not depend on the order or sharding of the
// pools.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/core/registry.h"
#include "concord/core/report.h"
#include "concord/data/records.h"
#include "concord/grape/score.h"

namespace concord::grape {

struct SelectOptions {
  /// Registered mode: grape, reverse, random, longest, source, all.
  std::string mode = "grape";
  /// Responses kept per instruction (grape, reverse, random, longest).
  int64_t top_k = 1;
  /// The source kept by mode "source".
  std::string source;
  /// Seed of mode "random".
  uint64_t seed = 1234;

  nlohmann::json to_json() const;  ///< select_options_schema().to_json(*this)
};

/// The keys of SelectOptions: mode (one of the registered modes), top_k (>= 1), source, seed.
const OptionsSchema<SelectOptions>& select_options_schema();

/// The candidates a mode keeps from one pool (indices into the pool's responses, in the order
/// the mode ranks them). `eligible` lists the scored candidates in pool order (never empty).
using SelectionMode = std::function<std::vector<size_t>(
    const data::GrapePool& pool, const PoolScores& scores, const std::vector<size_t>& eligible,
    const SelectOptions& options)>;

/// The registered modes.
const Registry<SelectionMode>& selection_modes();

/// One kept response.
struct Selection {
  size_t pool = 0;       ///< index into the pools
  size_t candidate = 0;  ///< index into the pool's responses
  int64_t rank = 0;      ///< 0 for the mode's first choice in its pool, 1 for the next, ...
};

/// Runs the mode over every pool. `scores` must be the merged scores of `pools` (same order,
/// same candidates).
std::vector<Selection> select_responses(const std::vector<data::GrapePool>& pools,
                                        const std::vector<PoolScores>& scores,
                                        const SelectOptions& options);

/// A selected response as an SFT record plus its provenance:
///   {"prompt", "completion", "id", "instruction", "response", "source", "score",
///    "response_tokens", "rank"}
/// The `sft` task reads prompt/completion (data/records.h) and ignores the rest.
nlohmann::json selection_to_json(const data::GrapePool& pool, const PoolScores& scores,
                                 const Selection& selection);

/// Writes the selections as JSONL, atomically.
void write_selected_jsonl(const std::filesystem::path& path,
                          const std::vector<data::GrapePool>& pools,
                          const std::vector<PoolScores>& scores,
                          const std::vector<Selection>& selections);

/// Summary of a set of scores.
struct ScoreSummary {
  int64_t count = 0;
  double mean = 0.0, stddev = 0.0;
  double min = 0.0, q25 = 0.0, median = 0.0, q75 = 0.0, max = 0.0;

  static ScoreSummary of(std::vector<double> values);
  nlohmann::json to_json() const;
};

/// What a run of the selection did: which sources won how often, how the scores are spread,
/// what was skipped.
struct SelectionReport {
  std::string mode;
  int64_t top_k = 1;
  int64_t pools = 0;
  int64_t pools_selected = 0;  ///< pools that gave at least one response
  int64_t pools_without = 0;   ///< pools with nothing to keep (no eligible candidate / source)
  int64_t selected = 0;
  ScoreStats stats;            ///< scoring counts (skipped, deduplicated, tokens)

  struct SourceRow {
    int64_t candidates = 0;  ///< candidates of this source
    int64_t scored = 0;
    int64_t wins = 0;        ///< selections of this source
    /// Pools where this source's response was the highest-scored one (ties: first): how often
    /// GRAPE would pick it, whatever the mode.
    int64_t best = 0;
    ScoreSummary scores;     ///< its candidates' scores
  };
  std::map<std::string, SourceRow> sources;  ///< by source name ("" for none)
  ScoreSummary all_scores;       ///< every scored candidate
  ScoreSummary selected_scores;  ///< the selections
  /// Histogram of the scores: edges[0..bins], counts per bin for all and selected candidates.
  std::vector<double> edges;
  std::vector<int64_t> all_hist, selected_hist;

  nlohmann::json to_json() const;
  /// Appends the tables (sources, score quantiles, skipped counts) to a run report.
  void add_to(Report& report) const;
  /// Two PNGs under `run_dir`/charts/: selections and best-scored counts per source (bars),
  /// and the score histograms of all and of the selected candidates (lines). Returns
  /// (title, path relative to run_dir) pairs for the report.
  std::vector<std::pair<std::string, std::string>> write_charts(
      const std::filesystem::path& run_dir) const;
};

SelectionReport make_selection_report(const std::vector<data::GrapePool>& pools,
                                      const std::vector<PoolScores>& scores,
                                      const std::vector<Selection>& selections,
                                      const SelectOptions& options, int bins = 20);

}  // namespace concord::grape
