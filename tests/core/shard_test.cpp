// The shard-and-merge protocol of core/shard.h: ranks, part files, merging.
#include <gtest/gtest.h>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/logging.h"
#include "concord/core/shard.h"
#include "test_support.h"

using concord::Shard;
using concord::ShardParts;

namespace {

struct Item {
  int64_t index;
  double value;
};

// A part file: "index value" lines.
std::string encode(const std::vector<Item>& items) {
  std::ostringstream out;
  out.precision(17);
  for (const auto& i : items) out << i.index << " " << i.value << "\n";
  return out.str();
}

std::vector<Item> decode(const std::filesystem::path& p) {
  std::istringstream in(concord::read_file(p));
  std::vector<Item> out;
  Item i{};
  while (in >> i.index >> i.value) out.push_back(i);
  return out;
}

// What "rank r of w" computes for items 0..n-1: its share, each a value no other rank makes.
std::vector<Item> compute(const Shard& shard, int64_t n) {
  std::vector<Item> out;
  for (int64_t i : shard.indices(n)) out.push_back({i, 0.1 * static_cast<double>(i * i) + 1.0 / 3});
  return out;
}

int64_t index_of(const Item& i) { return i.index; }

// Sets (or clears) environment variables for one scope.
class EnvGuard {
 public:
  EnvGuard(const char* rank, const char* world) { set(rank, world); }
  ~EnvGuard() { set(nullptr, nullptr); }

 private:
  static void set(const char* rank, const char* world) {
    if (rank) setenv("RANK", rank, 1); else unsetenv("RANK");
    if (world) setenv("WORLD_SIZE", world, 1); else unsetenv("WORLD_SIZE");
  }
};

}  // namespace

TEST(Shard, RanksSplitTheItemsAndTheNamesFollowTheFinalFile) {
  EXPECT_EQ(Shard({1, 3}).indices(8), (std::vector<int64_t>{1, 4, 7}));
  EXPECT_TRUE(Shard({2, 3}).owns(5));
  EXPECT_FALSE(Shard({2, 3}).owns(6));
  EXPECT_EQ(concord::shard_part_name("scores.jsonl", {1, 4}), "scores.rank1-of-4.jsonl");
  EXPECT_EQ(concord::shard_part_name("Mathematics.json", {0, 2}), "Mathematics.rank0-of-2.json");
  EXPECT_THROW(Shard({2, 2}).validate(), concord::Error);
}

TEST(Shard, ProcessShardReadsRankAndWorldSize) {
  {
    EnvGuard env(nullptr, nullptr);
    const Shard s = concord::process_shard();
    EXPECT_EQ(s.rank, 0);
    EXPECT_EQ(s.world_size, 1);
  }
  {
    EnvGuard env("3", "4");
    const Shard s = concord::process_shard();
    EXPECT_EQ(s.rank, 3);
    EXPECT_EQ(s.world_size, 4);
    EXPECT_EQ(concord::process_rank(), 3);  // logging's view is the same reading
    EXPECT_EQ(concord::process_world_size(), 4);
  }
  {
    EnvGuard env("4", "4");
    EXPECT_THROW(concord::process_shard(), concord::ConfigError);
  }
  {
    EnvGuard env("one", "2");
    try {
      concord::process_shard();
      FAIL() << "expected a ConfigError";
    } catch (const concord::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("RANK=one"), std::string::npos) << e.what();
    }
  }
}

TEST(Shard, ProcessShardReadsLocalRank) {
  EnvGuard env("1", "2");
  ::setenv("LOCAL_RANK", "1", 1);
  EXPECT_EQ(concord::process_shard().local_rank, 1);
  ::setenv("LOCAL_RANK", "-1", 1);
  try {
    concord::process_shard();
    ADD_FAILURE() << "a negative LOCAL_RANK was accepted";
  } catch (const concord::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("LOCAL_RANK=-1"), std::string::npos) << e.what();
  }
  ::unsetenv("LOCAL_RANK");
  EXPECT_EQ(concord::process_shard().local_rank, 0);
}

// Two ranks, simulated one after the other as two processes would run: the first writes its part
// and finds the other missing; the second finds both and merges exactly what one process computes.
TEST(Shard, TwoRanksWritePartsAndTheLastMergesExactly) {
  concord::testing::TempDir tmp;
  const int64_t n = 11;
  const ShardParts parts(tmp.path(), "scores.jsonl", 2);

  parts.write(0, encode(compute({0, 2}, n)));
  EXPECT_TRUE(parts.has(0));
  EXPECT_EQ(parts.missing(), (std::vector<int64_t>{1}));
  EXPECT_EQ(parts.missing_names(), "scores.rank1-of-2.jsonl");
  EXPECT_FALSE((concord::merge_shard_parts_if_complete<Item>(parts, decode, index_of, n, "scores")));

  parts.write(1, encode(compute({1, 2}, n)));
  EXPECT_TRUE(parts.complete());
  EXPECT_EQ(parts.missing_names(), "");
  const auto merged = concord::merge_shard_parts_if_complete<Item>(parts, decode, index_of, n, "scores");
  ASSERT_TRUE(merged);
  const auto single = compute({0, 1}, n);
  ASSERT_EQ(merged->size(), single.size());
  for (size_t i = 0; i < single.size(); ++i) {
    EXPECT_EQ((*merged)[i].index, single[i].index);
    EXPECT_EQ((*merged)[i].value, single[i].value);  // bit for bit
  }
  // Atomic writes leave no temporary files beside the parts.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) {
    ++files;
    EXPECT_NE(e.path().filename().string().find(".rank"), std::string::npos) << e.path();
  }
  EXPECT_EQ(files, 2u);
}

TEST(Shard, AMissingOrDuplicatedItemIsAnError) {
  auto part0 = compute({0, 2}, 6);  // 0 2 4
  auto part1 = compute({1, 2}, 6);  // 1 3 5
  // A part that lost an item: the merge names the first missing index.
  auto lossy = part1;
  lossy.erase(lossy.begin() + 1);  // item 3
  try {
    concord::merge_shard_items<Item>({part0, lossy}, index_of, 6, "scores.jsonl");
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("scores.jsonl: item 3 is missing from the parts"),
              std::string::npos)
        << e.what();
  }
  // The last item missing is reported as such too.
  auto short1 = part1;
  short1.pop_back();  // item 5
  try {
    concord::merge_shard_items<Item>({part0, short1}, index_of, 6, "scores.jsonl");
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("item 5 is missing"), std::string::npos) << e.what();
  }
  // The same item in two parts (a rank run with the wrong world size, a part copied twice).
  try {
    concord::merge_shard_items<Item>({part0, part1, {part1[0]}}, index_of, 6, "scores.jsonl");
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("scores.jsonl: item 1 appears in two parts"),
              std::string::npos)
        << e.what();
  }
  // An item past the expected count.
  EXPECT_THROW(concord::merge_shard_items<Item>({part0, part1, {{6, 0.0}}}, index_of, 6, "s"),
               concord::Error);
  // Without an expected count, any set of distinct indices merges in order.
  const auto merged = concord::merge_shard_items<Item>({part1, part0}, index_of, -1, "s");
  ASSERT_EQ(merged.size(), 6u);
  for (size_t i = 0; i < merged.size(); ++i) EXPECT_EQ(merged[i].index, static_cast<int64_t>(i));
}
