// metrics.jsonl: one JSON object per line, TRL's metric names where one exists
// (`train/loss`, `objective/kl`, `rewards/margins`, ...). Each line is written and flushed whole,
// so a crash loses at most the line being written and readers never see half a record. A write
// that fails (a full disk) is cut back off the file and throws, so the file keeps whole records.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace concord {

class MetricsWriter {
 public:
  /// Opens `path` for appending (a resumed run continues the same file). With `truncate`, starts
  /// it anew.
  explicit MetricsWriter(const std::filesystem::path& path, bool truncate = false);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  /// Appends {"step": step, name: value, ...}. Non-finite values are written as null (JSON has no
  /// NaN) and counted in the line as "nonfinite": [names].
  void log(int64_t step, const std::map<std::string, double>& values);
  /// Appends an arbitrary JSON object. A failed write throws concord::IoError naming the file
  /// and the reason, after removing whatever part of the line reached the file.
  void log_json(const nlohmann::json& record);

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

/// All records of a metrics.jsonl; a torn last line (a crash mid-write) is ignored, any other bad
/// line is an error naming the line.
std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path);

/// The (step, value) series of one metric, in file order, skipping records without it.
std::vector<std::pair<double, double>> metric_series(const std::vector<nlohmann::json>& records,
                                                     const std::string& name);

}  // namespace concord
