#include <gtest/gtest.h>

#include <fstream>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/core/progress.h"
#include "concord/core/registry.h"
#include "test_support.h"

namespace fs = std::filesystem;

TEST(Files, AtomicWriteReplacesWholeFileAndLeavesNoTemporaries) {
  concord::testing::TempDir tmp;
  auto path = tmp / "sub/out.txt";
  concord::write_file_atomic(path, std::string("first"));
  concord::write_file_atomic(path, std::string("second version"));
  EXPECT_EQ(concord::read_file(path), "second version");
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(path.parent_path())) { (void)e; ++entries; }
  EXPECT_EQ(entries, 1u);
}

TEST(Files, AtomicWriteThatThrowsKeepsTheOldFile) {
  concord::testing::TempDir tmp;
  auto path = tmp / "out.txt";
  concord::write_file_atomic(path, std::string("old"));
  EXPECT_THROW(concord::write_file_atomic(path, [](std::ostream& out) {
                 out << "half of the new";
                 throw std::runtime_error("disk on fire");
               }),
               std::runtime_error);
  EXPECT_EQ(concord::read_file(path), "old");
  size_t entries = 0;
  for (auto& e : fs::directory_iterator(tmp.path())) { (void)e; ++entries; }
  EXPECT_EQ(entries, 1u);
}

TEST(Files, MappedFileSeesContents) {
  concord::testing::TempDir tmp;
  auto path = concord::testing::write_file(tmp / "m.bin", "abcdef");
  concord::MappedFile m(path);
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.data()), 6), "abcdef");
  EXPECT_THROW(concord::MappedFile(tmp / "missing.bin"), concord::Error);
  EXPECT_THROW(concord::MappedFile(tmp.path()), concord::Error);
}

TEST(Metrics, WritesOneObjectPerLineAndToleratesATornTail) {
  concord::testing::TempDir tmp;
  auto path = tmp / "metrics.jsonl";
  {
    concord::MetricsWriter w(path, true);
    w.log(1, {{"train/loss", 2.5}, {"train/lr", 1e-4}});
    w.log(2, {{"train/loss", 2.0}, {"objective/kl", std::nan("")}});
  }
  {
    std::ofstream append(path, std::ios::app);
    append << "{\"step\": 3, \"train/lo";  // a crash mid-line
  }
  auto records = concord::read_metrics(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["objective/kl"], nullptr);
  EXPECT_EQ(records[1]["nonfinite"][0], "objective/kl");
  auto loss = concord::metric_series(records, "train/loss");
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_DOUBLE_EQ(loss[1].first, 2.0);
  EXPECT_DOUBLE_EQ(loss[1].second, 2.0);
}

TEST(Metrics, CorruptMiddleLineNamesTheLine) {
  concord::testing::TempDir tmp;
  auto path = concord::testing::write_file(tmp / "m.jsonl", "{\"step\":1}\nnot json\n{\"step\":3}\n");
  try {
    concord::read_metrics(path);
    FAIL() << "expected an error";
  } catch (const concord::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("m.jsonl: line 2"), std::string::npos) << e.what();
  }
}

TEST(Progress, FormatsTheLlmcLine) {
  concord::ProgressStats s;
  s.step = 120;
  s.loss = 2.9131;
  s.lr = 3e-4;
  s.step_ms = 41;
  s.tokens = 508;
  EXPECT_EQ(concord::format_progress(s, 2000, 41.0),
            "step 120/2000 | loss 2.913 | lr 3.0e-04 | 41 ms | 12.4k tok/s | ETA 1m17s");
}

TEST(Progress, PlainOutputPrintsFirstAndLastOnly) {
  concord::testing::TempDir tmp;
  auto path = tmp / "p.txt";
  FILE* f = std::fopen(path.c_str(), "w");
  {
    concord::ProgressLine p(5, "step", f, false, 3600.0);
    for (int i = 1; i <= 5; ++i) {
      concord::ProgressStats s;
      s.step = i;
      s.step_ms = 10;
      p.update(s);
    }
  }
  std::fclose(f);
  std::string text = concord::read_file(path);
  EXPECT_EQ(text, "step 1/5 | 10 ms | ETA 40 ms\nstep 5/5 | 10 ms\n");
}

TEST(Registry, UnknownNameListsValidOnes) {
  concord::Registry<int> r("loss");
  r.add("bt", 1).add("hinge", 2);
  EXPECT_EQ(r.get("hinge"), 2);
  try {
    r.get("mse");
    FAIL();
  } catch (const concord::Error& e) {
    EXPECT_STREQ(e.what(), "unknown loss 'mse' (valid: bt, hinge)");
  }
}
