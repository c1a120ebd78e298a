#include "concord/core/metrics.h"

#include <cmath>
#include <sstream>

#include "concord/core/error.h"

namespace concord {

MetricsWriter::MetricsWriter(const std::filesystem::path& path, bool truncate) : path_(path) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  out_.open(path, truncate ? (std::ios::out | std::ios::trunc) : (std::ios::out | std::ios::app));
  if (!out_.is_open()) fail_io(path.string(), "cannot open metrics file for writing");
}

void MetricsWriter::log(int64_t step, const std::map<std::string, double>& values) {
  nlohmann::json record = {{"step", step}};
  std::vector<std::string> nonfinite;
  for (const auto& [name, v] : values) {
    if (std::isfinite(v)) {
      record[name] = v;
    } else {
      record[name] = nullptr;
      nonfinite.push_back(name);
    }
  }
  if (!nonfinite.empty()) record["nonfinite"] = nonfinite;
  log_json(record);
}

void MetricsWriter::log_json(const nlohmann::json& record) {
  // One write of the whole line, then flush: readers see whole records only.
  const std::string line = record.dump() + "\n";
  out_.write(line.data(), static_cast<std::streamsize>(line.size()));
  out_.flush();
  if (!out_.good()) fail_io(path_.string(), "write failed");
}

std::vector<nlohmann::json> read_metrics(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in.is_open()) fail_io(path.string(), "cannot open");
  std::vector<nlohmann::json> out;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const bool last = in.peek() == std::char_traits<char>::eof();
    try {
      out.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::parse_error& e) {
      if (last && !in.bad()) break;  // torn final line from an interrupted write
      fail_format(path.string(), "line ", line_no, ": invalid JSON");
    }
  }
  return out;
}

std::vector<std::pair<double, double>> metric_series(const std::vector<nlohmann::json>& records,
                                                     const std::string& name) {
  std::vector<std::pair<double, double>> out;
  for (const auto& r : records) {
    auto it = r.find(name);
    if (it == r.end() || !it->is_number()) continue;
    double step = r.contains("step") && r["step"].is_number() ? r["step"].get<double>()
                                                               : static_cast<double>(out.size());
    out.emplace_back(step, it->get<double>());
  }
  return out;
}

}  // namespace concord
