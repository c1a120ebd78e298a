// The one progress line a step, after llm.c:
//   step 120/2000 | loss 2.913 | lr 3.0e-04 | 41 ms | 12.4k tok/s | ETA 1m17s
// On a terminal the line redraws in place; otherwise (logs, CI) it prints plain lines, at most one
// every `min_interval_s` seconds plus the first and the last step.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

namespace concord {

struct ProgressStats {
  int64_t step = 0;                 ///< 1-based step just finished
  std::optional<double> loss;
  std::optional<double> lr;
  double step_ms = 0;               ///< wall time of this step
  std::optional<double> tokens;     ///< inputs processed in this step (for the rate)
  std::string unit = "tok";         ///< what `tokens` counts: the rate prints as "<n> <unit>/s"
  std::map<std::string, double> extra;  ///< more "name value" fields, printed in name order
};

/// Formats one progress line (no newline). ETA is from the mean step time so far.
std::string format_progress(const ProgressStats& s, int64_t total_steps, double mean_step_ms);

class ProgressLine {
 public:
  /// `out` defaults to stderr; `interactive` defaults to isatty(out).
  ProgressLine(int64_t total_steps, std::string label = "step", FILE* out = nullptr,
               std::optional<bool> interactive = std::nullopt, double min_interval_s = 10.0);
  ~ProgressLine();

  void update(const ProgressStats& stats);
  /// Ends a redrawn line with a newline.
  void finish();

 private:
  int64_t total_;
  std::string label_;
  FILE* out_;
  bool interactive_;
  double min_interval_s_;
  double sum_ms_ = 0;
  int64_t count_ = 0;
  bool open_line_ = false;
  std::chrono::steady_clock::time_point last_print_{};
  bool printed_ = false;
};

/// "1.2k", "3.4M": a count to 3 significant digits.
std::string human_count(double v);
/// "41 ms", "2.3 s", "1m17s", "2h05m".
std::string human_duration_ms(double ms);

}  // namespace concord
