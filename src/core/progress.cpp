#include "concord/core/progress.h"

#include <unistd.h>

#include <cmath>
#include <fmt/format.h>

namespace concord {

std::string human_count(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt::format("{:.3g}G", v / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g}M", v / 1e6);
  if (a >= 1e3) return fmt::format("{:.3g}k", v / 1e3);
  return fmt::format("{:.3g}", v);
}

std::string human_duration_ms(double ms) {
  if (ms < 1000) return fmt::format("{:.0f} ms", ms);
  const double s = ms / 1000;
  if (s < 60) return fmt::format("{:.1f} s", s);
  const auto total = static_cast<int64_t>(std::llround(s));
  if (total < 3600) return fmt::format("{}m{:02d}s", total / 60, static_cast<int>(total % 60));
  return fmt::format("{}h{:02d}m", total / 3600, static_cast<int>((total % 3600) / 60));
}

std::string format_progress(const ProgressStats& s, int64_t total_steps, double mean_step_ms) {
  std::string line = total_steps > 0 ? fmt::format("step {}/{}", s.step, total_steps)
                                     : fmt::format("step {}", s.step);
  if (s.loss) line += fmt::format(" | loss {:.3f}", *s.loss);
  if (s.lr) line += fmt::format(" | lr {:.1e}", *s.lr);
  for (const auto& [name, v] : s.extra) line += fmt::format(" | {} {:.4g}", name, v);
  line += " | " + human_duration_ms(s.step_ms);
  if (s.tokens && s.step_ms > 0) {
    line += " | " + human_count(*s.tokens / (s.step_ms / 1000.0)) + " " + s.unit + "/s";
  }
  if (total_steps > 0 && s.step < total_steps && mean_step_ms > 0) {
    line += " | ETA " + human_duration_ms(mean_step_ms * static_cast<double>(total_steps - s.step));
  }
  return line;
}

ProgressLine::ProgressLine(int64_t total_steps, std::string label, FILE* out,
                           std::optional<bool> interactive, double min_interval_s)
    : total_(total_steps),
      label_(std::move(label)),
      out_(out ? out : stderr),
      interactive_(interactive.value_or(isatty(fileno(out ? out : stderr)) != 0)),
      min_interval_s_(min_interval_s) {}

ProgressLine::~ProgressLine() { finish(); }

void ProgressLine::update(const ProgressStats& stats) {
  sum_ms_ += stats.step_ms;
  ++count_;
  std::string line = format_progress(stats, total_, sum_ms_ / static_cast<double>(count_));
  if (label_ != "step") line.replace(0, 4, label_);
  const auto now = std::chrono::steady_clock::now();
  if (interactive_) {
    // \r + clear-to-end-of-line redraws the same terminal row.
    std::fprintf(out_, "\r\033[K%s", line.c_str());
    std::fflush(out_);
    open_line_ = true;
    return;
  }
  const bool last = total_ > 0 && stats.step >= total_;
  const double since = std::chrono::duration<double>(now - last_print_).count();
  if (!printed_ || last || since >= min_interval_s_) {
    std::fprintf(out_, "%s\n", line.c_str());
    std::fflush(out_);
    last_print_ = now;
    printed_ = true;
  }
}

void ProgressLine::finish() {
  if (open_line_) {
    std::fprintf(out_, "\n");
    std::fflush(out_);
    open_line_ = false;
  }
}

}  // namespace concord
