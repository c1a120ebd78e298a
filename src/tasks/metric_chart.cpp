#include "metric_chart.h"

#include "concord/core/metrics.h"
#include "concord/core/plot.h"

namespace concord::tasks {

bool chart_metrics_together(RunDirectory& dir, const std::string& file, const std::string& title,
                            const std::string& x_label, const std::string& y_label,
                            const std::vector<std::string>& names) {
  const auto records = read_metrics(dir.file("metrics.jsonl"));
  std::vector<Series> series;
  for (const auto& name : names) {
    Series s{name, {}, {}};
    for (const auto& [x, v] : metric_series(records, name)) {
      s.x.push_back(x);
      s.y.push_back(v);
    }
    if (!s.x.empty()) series.push_back(std::move(s));
  }
  if (series.empty()) return false;
  ChartSpec spec;
  spec.title = title;
  spec.x_label = x_label;
  spec.y_label = y_label;
  plot_lines(dir.chart(file), spec, series);
  return true;
}

}  // namespace concord::tasks
