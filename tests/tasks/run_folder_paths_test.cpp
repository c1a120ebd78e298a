// Names that come from a run's config cannot make a task write outside its run folder (issue
// 16): tokenize's shard_prefix with '..' or an absolute path is a one-line ConfigError naming
// the key, and nothing is written where it pointed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/tasks/tasks.h"
#include "test_support.h"

namespace fs = std::filesystem;

TEST(RunFolderPaths, ShardPrefixCannotLeaveTheRunFolder) {
  concord::testing::TempDir tmp;
  const auto corpus = concord::testing::write_file(tmp / "c.jsonl", "{\"text\": \"ab\"}\n");
  const std::vector<std::string> prefixes{"../escaped/train", "shards/../../escaped/train",
                                          (tmp / "escaped" / "train").string()};
  for (const std::string& prefix : prefixes) {
    const std::string config = R"({"task": "tokenize", "input": ")" + corpus.string() +
                               R"(", "shard_prefix": ")" + prefix + R"("})";
    try {
      concord::tasks::run_task(config, {}, (tmp / "run").string());
      ADD_FAILURE() << "shard_prefix '" << prefix << "' was accepted";
    } catch (const concord::ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("shard_prefix: '" + prefix + "'", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(tmp / "escaped")) << prefix;
  }
}
