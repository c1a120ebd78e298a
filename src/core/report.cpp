#include "concord/core/report.h"

#include <fmt/format.h>

#include <cstring>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/plot.h"

namespace fs = std::filesystem;

namespace concord {

namespace {
std::string escape_cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out;
}
bool looks_numeric(const std::string& s) {
  if (s.empty()) return false;
  size_t digits = 0;
  for (char c : s) {
    if (c >= '0' && c <= '9') ++digits;
    else if (!std::strchr("+-.,%eE x()", c)) return false;
  }
  return digits > 0;
}

}  // namespace

Report::Report(std::string title) { body_ = "# " + title + "\n\n"; }

void Report::end_list() {
  // A bullet ends in one newline; whatever follows a list needs a blank line or Markdown makes it
  // part of the last item.
  if (body_.size() > 1 && body_.back() == '\n' && body_[body_.size() - 2] != '\n') body_ += "\n";
}

Report& Report::heading(const std::string& text, int level) {
  end_list();
  body_ += std::string(static_cast<size_t>(std::clamp(level, 1, 6)), '#') + " " + text + "\n\n";
  return *this;
}

Report& Report::paragraph(const std::string& text) {
  end_list();
  body_ += text + "\n\n";
  return *this;
}

Report& Report::bullet(const std::string& text) {
  body_ += "- " + text + "\n";
  return *this;
}

Report& Report::table(const std::vector<std::string>& header,
                      const std::vector<std::vector<std::string>>& rows) {
  CONCORD_CHECK(!header.empty(), "Report::table: empty header");
  auto row_text = [](const std::vector<std::string>& cells) {
    std::string line = "|";
    for (const auto& c : cells) line += " " + escape_cell(c) + " |";
    return line + "\n";
  };
  end_list();
  body_ += row_text(header);
  body_ += "|";
  // Numeric columns align right, text columns left.
  for (size_t i = 0; i < header.size(); ++i) {
    bool numeric = !rows.empty();
    for (const auto& r : rows) {
      if (i >= r.size() || !looks_numeric(r[i])) numeric = false;
    }
    body_ += numeric ? " ---: |" : " --- |";
  }
  body_ += "\n";
  for (const auto& r : rows) {
    CONCORD_CHECK(r.size() == header.size(), "Report::table: row of ", r.size(), " cells for ",
                  header.size(), " columns");
    body_ += row_text(r);
  }
  body_ += "\n";
  return *this;
}

Report& Report::image(const std::string& alt, const std::string& relative_path) {
  end_list();
  body_ += "![" + alt + "](" + relative_path + ")\n\n";
  return *this;
}

Report& Report::code(const std::string& text, const std::string& language) {
  end_list();
  body_ += "```" + language + "\n" + text + (text.empty() || text.back() != '\n' ? "\n" : "") + "```\n\n";
  return *this;
}

Report& Report::raw(const std::string& markdown) {
  body_ += markdown;
  return *this;
}

std::string Report::markdown() const { return body_; }

void Report::write(const fs::path& path) const { write_file_atomic(path, body_); }

RunDirectory::RunDirectory(const fs::path& dir, bool resume) : dir_(dir), resume_(resume) {
  std::error_code ec;
  fs::create_directories(dir_ / "charts", ec);
  if (ec) fail_io(dir_.string(), "cannot create the run folder: ", ec.message());
}

fs::path RunDirectory::file(const std::string& name, const std::string& key) const {
  return path_inside(dir_, name, key);
}

fs::path RunDirectory::chart(const std::string& name, const std::string& key) const {
  return path_inside(dir_ / "charts", name, key);
}

void RunDirectory::write_config(const nlohmann::json& resolved) const {
  write_file_atomic(dir_ / "config.json", resolved.dump(2) + "\n");
}

MetricsWriter& RunDirectory::metrics() {
  if (!metrics_) metrics_ = std::make_unique<MetricsWriter>(dir_ / "metrics.jsonl", !resume_);
  return *metrics_;
}

void RunDirectory::drop_metrics_after(int64_t step) {
  const fs::path path = dir_ / "metrics.jsonl";
  metrics_.reset();  // closes the append handle before the file is replaced
  if (!fs::exists(path)) return;
  std::string kept;
  for (const auto& record : read_metrics(path)) {
    auto it = record.find("step");
    if (it != record.end() && it->is_number() && it->get<double>() > static_cast<double>(step)) continue;
    kept += record.dump() + "\n";
  }
  write_file_atomic(path, kept);
}

std::vector<std::pair<std::string, std::string>> RunDirectory::chart_metrics(
    const std::vector<std::string>& names) const {
  std::vector<std::pair<std::string, std::string>> out;
  const fs::path metrics_path = dir_ / "metrics.jsonl";
  if (!fs::exists(metrics_path)) return out;
  const auto records = read_metrics(metrics_path);
  for (const auto& name : names) {
    auto series = metric_series(records, name);
    if (series.empty()) continue;
    Series s{name, {}, {}};
    for (auto& [x, y] : series) {
      s.x.push_back(x);
      s.y.push_back(y);
    }
    std::string file = name;
    for (char& c : file) if (c == '/' || c == ' ') c = '_';
    file += ".png";
    plot_lines(dir_ / "charts" / file, ChartSpec{name, "step", name}, {s});
    out.emplace_back(name, "charts/" + file);
  }
  return out;
}

std::string fixed(double v, int digits) { return fmt::format("{:.{}f}", v, digits); }

}  // namespace concord
