#include <gtest/gtest.h>

#include <fstream>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/plot.h"
#include "concord/core/report.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {
// PNG signature and IHDR width/height (big-endian at bytes 16..23).
std::pair<uint32_t, uint32_t> png_size(const fs::path& p) {
  std::string bytes = concord::read_file(p);
  EXPECT_GE(bytes.size(), 24u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  auto be32 = [&](size_t o) {
    return (uint32_t(uint8_t(bytes[o])) << 24) | (uint32_t(uint8_t(bytes[o + 1])) << 16) |
           (uint32_t(uint8_t(bytes[o + 2])) << 8) | uint32_t(uint8_t(bytes[o + 3]));
  };
  return {be32(16), be32(20)};
}
}  // namespace

TEST(Plot, LineChartIsAPngOfTheRequestedSize) {
  concord::testing::TempDir tmp;
  concord::Series a{"vanilla", {1, 2, 3, 4}, {3.0, 2.5, 2.2, 2.1}};
  concord::Series b{"siaf+as", {1, 2, 3, 4}, {3.0, 2.4, 2.0, std::nan("")}};
  concord::ChartSpec spec{"loss", "step", "loss"};
  spec.width = 640;
  spec.height = 400;
  concord::plot_lines(tmp / "loss.png", spec, {a, b});
  auto [w, h] = png_size(tmp / "loss.png");
  EXPECT_EQ(w, 640u);
  EXPECT_EQ(h, 400u);
}

TEST(Plot, BarsAndEmptyChartError) {
  concord::testing::TempDir tmp;
  concord::plot_bars(tmp / "bars.png", {"accuracy", "", "acc"}, {"grape", "random"}, {0.6, 0.4}, {0.05, 0.02});
  EXPECT_GT(fs::file_size(tmp / "bars.png"), 1000u);
  EXPECT_THROW(concord::plot_lines(tmp / "empty.png", {"t"}, {concord::Series{"x", {1}, {std::nan("")}}}),
               concord::Error);
  EXPECT_FALSE(fs::exists(tmp / "empty.png"));
}

TEST(Report, MarkdownTableAndRunDirectory) {
  concord::Report r("Run");
  r.heading("Results").table({"model", "acc"}, {{"a|b", "0.50"}, {"c", "12.5 %"}}).image("loss", "charts/loss.png");
  EXPECT_EQ(r.markdown(),
            "# Run\n\n## Results\n\n| model | acc |\n| --- | ---: |\n| a\\|b | 0.50 |\n| c | 12.5 % |\n\n"
            "![loss](charts/loss.png)\n\n");
  EXPECT_THROW(r.table({"a", "b"}, {{"only one"}}), concord::Error);

  // Whatever follows a bullet list starts after a blank line, or Markdown continues the last item.
  concord::Report list("L");
  list.bullet("one").bullet("two").image("c", "c.png").bullet("three").paragraph("after");
  EXPECT_EQ(list.markdown(), "# L\n\n- one\n- two\n\n![c](c.png)\n\n- three\n\nafter\n\n");

  concord::testing::TempDir tmp;
  concord::RunDirectory run(tmp / "run");
  run.write_config({{"task", "sft"}});
  run.metrics().log(1, {{"train/loss", 3.0}});
  run.metrics().log(2, {{"train/loss", 2.0}});
  auto charts = run.chart_metrics({"train/loss", "never/logged"});
  ASSERT_EQ(charts.size(), 1u);
  EXPECT_EQ(charts[0].second, "charts/train_loss.png");
  EXPECT_TRUE(fs::exists(tmp / "run/charts/train_loss.png"));
  EXPECT_EQ(concord::read_file(tmp / "run/config.json"), "{\n  \"task\": \"sft\"\n}\n");
  EXPECT_EQ(concord::fixed(0.12345, 2), "0.12");
}
