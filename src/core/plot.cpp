#include "concord/core/plot.h"

#include <plstream.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <random>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;

namespace concord {

namespace {

// PLplot keeps some global state between streams; one chart at a time.
std::mutex& plot_mutex() {
  static std::mutex m;
  return m;
}

// Colour-blind-safe palette (Okabe-Ito), as 0-255 RGB, mapped to cmap0 entries 1..8.
const int kPalette[8][3] = {{0, 114, 178}, {230, 159, 0}, {0, 158, 115}, {204, 121, 167},
                            {86, 180, 233}, {213, 94, 0}, {240, 228, 66}, {0, 0, 0}};

struct Stream {
  plstream pls;
  explicit Stream(const fs::path& file, const ChartSpec& spec) : pls() {
    pls.sdev("pngcairo");
    pls.sfnam(file.c_str());
    pls.setopt("geometry", (std::to_string(spec.width) + "x" + std::to_string(spec.height)).c_str());
    pls.scolbg(255, 255, 255);
    pls.scmap0n(16);
    pls.scol0(15, 0, 0, 0);  // axes and text in black
    for (int i = 0; i < 8; ++i) pls.scol0(i + 1, kPalette[i][0], kPalette[i][1], kPalette[i][2]);
    pls.init();
    pls.schr(0, 0.9);
  }
};

// Renders into a temporary file, then renames it into place.
template <typename Draw>
void render_atomic(const fs::path& png, const ChartSpec& spec, Draw draw) {
  std::lock_guard<std::mutex> lock(plot_mutex());
  if (png.has_parent_path()) fs::create_directories(png.parent_path());
  std::random_device rd;
  fs::path tmp = png.parent_path() / ("." + png.filename().string() + ".tmp-" + std::to_string(rd()));
  try {
    {
      Stream s(tmp, spec);
      draw(s.pls);
    }  // plstream's destructor ends the page and closes the file
    std::error_code ec;
    CONCORD_CHECK(fs::exists(tmp) && fs::file_size(tmp) > 0, png.string(),
                  ": PLplot wrote no image (is plplot-driver-cairo installed?)");
    fs::rename(tmp, png, ec);
    CONCORD_CHECK(!ec, png.string(), ": cannot rename chart: ", ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void nice_range(double& lo, double& hi) {
  if (!(hi > lo)) {
    const double pad = std::fabs(lo) > 0 ? std::fabs(lo) * 0.1 : 1.0;
    lo -= pad;
    hi += pad;
    return;
  }
  const double pad = (hi - lo) * 0.05;
  lo -= pad;
  hi += pad;
}

}  // namespace

void plot_lines(const fs::path& png, const ChartSpec& spec, const std::vector<Series>& series) {
  std::vector<Series> clean;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (const auto& s : series) {
    CONCORD_CHECK(s.x.size() == s.y.size(), "plot_lines: series '", s.label, "' has ", s.x.size(),
                  " x values and ", s.y.size(), " y values");
    Series c{s.label, {}, {}};
    for (size_t i = 0; i < s.x.size(); ++i) {
      double y = s.y[i];
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) continue;
      if (spec.log_y) {
        if (y <= 0) continue;
        y = std::log10(y);
      }
      c.x.push_back(s.x[i]);
      c.y.push_back(y);
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, y);
      ymax = std::max(ymax, y);
    }
    if (!c.x.empty()) clean.push_back(std::move(c));
  }
  CONCORD_CHECK(!clean.empty(), png.string(), ": nothing to plot for '", spec.title, "'");
  nice_range(xmin, xmax);
  nice_range(ymin, ymax);

  render_atomic(png, spec, [&](plstream& pls) {
    pls.col0(15);
    pls.env(xmin, xmax, ymin, ymax, 0, spec.log_y ? 20 : 2);  // 2: grid; 20: log y + grid
    pls.lab(spec.x_label.c_str(), spec.y_label.c_str(), spec.title.c_str());
    std::vector<PLINT> opts, colors, styles;
    std::vector<PLFLT> widths;
    std::vector<std::string> texts;
    for (size_t i = 0; i < clean.size(); ++i) {
      const int color = 1 + static_cast<int>(i % 8);
      pls.col0(color);
      pls.width(2.0);
      if (clean[i].x.size() == 1) {
        PLFLT x = clean[i].x[0], y = clean[i].y[0];
        pls.poin(1, &x, &y, 17);
      } else {
        pls.line(static_cast<PLINT>(clean[i].x.size()), clean[i].x.data(), clean[i].y.data());
      }
      opts.push_back(PL_LEGEND_LINE);
      colors.push_back(color);
      styles.push_back(1);
      widths.push_back(2.0);
      texts.push_back(clean[i].label);
    }
    if (clean.size() > 1 || !clean[0].label.empty()) {
      std::vector<const char*> text_ptrs;
      for (const auto& t : texts) text_ptrs.push_back(t.c_str());
      std::vector<PLINT> text_colors(clean.size(), 15);
      PLFLT lw, lh;
      pls.width(1.0);
      pls.legend(&lw, &lh, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX, PL_POSITION_TOP | PL_POSITION_RIGHT | PL_POSITION_INSIDE,
                 0.02, 0.02, 0.1, 0, 15, 1, 0, 0, static_cast<PLINT>(clean.size()), opts.data(),
                 1.0, 0.8, 2.0, 0.0, text_colors.data(), text_ptrs.data(), nullptr, nullptr,
                 nullptr, nullptr, colors.data(), styles.data(), widths.data(), nullptr, nullptr,
                 nullptr, nullptr);
    }
  });
}

void plot_bars(const fs::path& png, const ChartSpec& spec, const std::vector<std::string>& labels,
               const std::vector<double>& values, const std::vector<double>& errors) {
  CONCORD_CHECK(!labels.empty() && labels.size() == values.size(), png.string(),
                ": plot_bars needs one value per label");
  CONCORD_CHECK(errors.empty() || errors.size() == values.size(), png.string(),
                ": plot_bars needs one error per value");
  double ymin = 0, ymax = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double e = errors.empty() ? 0 : errors[i];
    ymin = std::min(ymin, values[i] - e);
    ymax = std::max(ymax, values[i] + e);
  }
  nice_range(ymin, ymax);
  const double n = static_cast<double>(values.size());
  render_atomic(png, spec, [&](plstream& pls) {
    pls.col0(15);
    pls.env(0, n, ymin, ymax, 0, -2);  // -2: no axes; we draw the y axis with labels ourselves
    pls.box("bc", 0, 0, "bcnstg", 0, 0);
    pls.lab("", spec.y_label.c_str(), spec.title.c_str());
    for (size_t i = 0; i < values.size(); ++i) {
      const double x0 = i + 0.15, x1 = i + 0.85;
      PLFLT xs[4] = {x0, x0, x1, x1};
      PLFLT ys[4] = {0, values[i], values[i], 0};
      pls.col0(1 + static_cast<int>(i % 8));
      pls.fill(4, xs, ys);
      pls.col0(15);
      if (!errors.empty() && errors[i] > 0) {
        PLFLT xc[2] = {i + 0.5, i + 0.5};
        PLFLT yc[2] = {values[i] - errors[i], values[i] + errors[i]};
        pls.line(2, xc, yc);
      }
      pls.mtex("b", 1.5, (i + 0.5) / n, 0.5, labels[i].c_str());
    }
  });
}

}  // namespace concord
