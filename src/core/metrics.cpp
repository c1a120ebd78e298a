#include "concord/core/metrics.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "concord/core/error.h"

namespace concord {

MetricsWriter::MetricsWriter(const std::filesystem::path& path, bool truncate) : path_(path) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) fail_io(path.string(), "cannot create its folder: ", ec.message());
  const int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
  fd_ = ::open(path.c_str(), flags, 0666);
  if (fd_ < 0) fail_io(path.string(), "cannot open metrics file for writing: ", std::strerror(errno));
}

MetricsWriter::~MetricsWriter() {
  if (fd_ >= 0) ::close(fd_);
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
  // One write of the whole line on an O_APPEND descriptor: readers see whole records only.
  const std::string line = record.dump() + "\n";
  const off_t before = ::lseek(fd_, 0, SEEK_END);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      // Cut a partial line back off: the next record must not continue a torn one, which would
      // make a bad line in the middle of the file.
      if (before >= 0 && left < line.size()) (void)::ftruncate(fd_, before);
      fail_io(path_.string(), "cannot append a record: ", std::strerror(err),
              err == ENOSPC || err == EDQUOT ? " (disk full?)" : "");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
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
