// read_fortunes: entries split on '%' lines, blank edges trimmed, index files skipped.
#include <gtest/gtest.h>

#include "concord/core/error.h"
#include "concord/data/fortune.h"
#include "test_support.h"

using concord::testing::TempDir;
using concord::testing::write_file;

TEST(Fortune, SplitsEntriesAndSkipsIndexFiles) {
  TempDir tmp;
  write_file(tmp / "fortunes/b", "\nSecond file.\n%\n");
  write_file(tmp / "fortunes/a", "First line\nsecond line\n%\n\n%\nTwo\n  -- Author\n%\nlast");
  write_file(tmp / "fortunes/a.dat", "binary index");
  const auto entries = concord::data::read_fortunes(tmp / "fortunes");
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0], "First line\nsecond line");
  EXPECT_EQ(entries[1], "Two\n  -- Author");
  EXPECT_EQ(entries[2], "last");
  EXPECT_EQ(entries[3], "Second file.");
  EXPECT_EQ(concord::data::read_fortunes(tmp / "fortunes/b").size(), 1u);
  try {
    concord::data::read_fortunes(tmp / "missing");
    FAIL();
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}
