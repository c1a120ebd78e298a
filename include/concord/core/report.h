// report.md of a run: headings, paragraphs, tables and chart links, written atomically.
// Also RunDirectory: the folder every run writes (config.json, metrics.jsonl, report.md, charts/).
#pragma once
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "concord/core/metrics.h"

namespace concord {

class Report {
 public:
  explicit Report(std::string title);

  Report& heading(const std::string& text, int level = 2);
  Report& paragraph(const std::string& text);
  Report& bullet(const std::string& text);
  /// A Markdown table; every row must have as many cells as the header.
  Report& table(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);
  /// An image link, path relative to the report's folder.
  Report& image(const std::string& alt, const std::string& relative_path);
  Report& code(const std::string& text, const std::string& language = "");
  Report& raw(const std::string& markdown);

  std::string markdown() const;
  void write(const std::filesystem::path& path) const;

 private:
  void end_list();  ///< a blank line after a bullet list, so what follows is not its last item
  std::string body_;
};

/// The run folder: creates it, writes the resolved config, owns metrics.jsonl.
class RunDirectory {
 public:
  /// Creates `dir` (and charts/). With `resume`, an existing metrics.jsonl is appended to.
  RunDirectory(const std::filesystem::path& dir, bool resume = false);

  const std::filesystem::path& path() const { return dir_; }
  /// <run>/<name>. `name` may hold folders but must stay inside the run folder: an absolute
  /// path or a `..` component throws concord::ConfigError naming `key` (the config key the
  /// name came from; "file name" when it is the code's own).
  std::filesystem::path file(const std::string& name, const std::string& key = "file name") const;
  /// <run>/charts/<name>, checked as file() checks.
  std::filesystem::path chart(const std::string& name, const std::string& key = "chart name") const;

  /// Writes config.json (pretty, atomically).
  void write_config(const nlohmann::json& resolved) const;
  MetricsWriter& metrics();
  /// True when opened to continue an earlier run (`concord run --resume`).
  bool resuming() const { return resume_; }
  /// Drops the metrics records of steps after `step` (a run resumed from the checkpoint of
  /// `step` logs the later steps again), rewriting metrics.jsonl atomically.
  void drop_metrics_after(int64_t step);

  /// Draws one PNG per metric name found in metrics.jsonl (names may hold '/', which become '_'),
  /// returns the relative paths in the order of `names`; names never logged are skipped.
  std::vector<std::pair<std::string, std::string>> chart_metrics(const std::vector<std::string>& names) const;

 private:
  std::filesystem::path dir_;
  bool resume_;
  std::unique_ptr<MetricsWriter> metrics_;
};

/// Formats a number for a table cell with `digits` decimals.
std::string fixed(double v, int digits = 2);

}  // namespace concord
