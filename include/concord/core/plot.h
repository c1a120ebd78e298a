// PNG line charts through PLplot's pngcairo device (Debian: libplplot-dev, plplot-driver-cairo).
// Kept behind this small interface so the plotting library can be swapped.
#pragma once
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace concord {

struct Series {
  std::string label;
  std::vector<double> x;
  std::vector<double> y;
};

struct ChartSpec {
  std::string title;
  std::string x_label = "step";
  std::string y_label;
  bool log_y = false;
  int width = 800;
  int height = 500;
};

/// Draws the series as lines with a legend and writes a PNG atomically (temp file + rename).
/// Non-finite points are dropped; an empty chart is an error.
void plot_lines(const std::filesystem::path& png, const ChartSpec& spec,
                const std::vector<Series>& series);

/// Bars with error whiskers (mean +- spread), one bar per label.
void plot_bars(const std::filesystem::path& png, const ChartSpec& spec,
               const std::vector<std::string>& labels, const std::vector<double>& values,
               const std::vector<double>& errors = {});

}  // namespace concord
