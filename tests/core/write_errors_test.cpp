// Writes that fail: a file-size limit in place of a full disk (fault_injection.h) and a
// read-only folder make write_file_atomic and the metrics writer throw one line naming the file
// and the reason, and leave the old contents whole with no temporary files behind. Also the
// run-folder guard: names from configs and data cannot leave the run folder.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/core/report.h"
#include "fault_injection.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::testing::FileSizeLimit;
using concord::testing::TempDir;

namespace {

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

// The message of the concord::IoError that `f` throws ("" and a test failure if none).
template <typename F>
std::string io_error_of(F&& f) {
  try {
    f();
  } catch (const concord::IoError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected concord::IoError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected concord::IoError, nothing was thrown";
  return "";
}

bool has(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

TEST(WriteErrors, AtomicWritePastTheSizeLimitKeepsTheOldFile) {
  TempDir tmp;
  const fs::path path = tmp / "model.bin";
  concord::write_file_atomic(path, std::string(1000, 'a'));
  const std::string big(256 * 1024, 'b');  // more than the stream's 64 KiB buffer, and less
  std::string message;
  {
    FileSizeLimit limit(100 * 1024);
    ASSERT_TRUE(limit.ok());
    message = io_error_of([&] { concord::write_file_atomic(path, big); });
  }
  EXPECT_TRUE(has(message, path.string())) << message;
  EXPECT_TRUE(has(message, std::strerror(EFBIG))) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_EQ(concord::read_file(path), std::string(1000, 'a'));
  EXPECT_EQ(entries(tmp.path()), std::set<std::string>{"model.bin"});

  // Small writes through the buffer fail the same way, at the final flush.
  {
    FileSizeLimit limit(10);
    ASSERT_TRUE(limit.ok());
    message = io_error_of([&] {
      concord::write_file_atomic(path, [](std::ostream& out) { out << "twenty-one characters"; });
    });
  }
  EXPECT_TRUE(has(message, std::strerror(EFBIG))) << message;
  EXPECT_EQ(concord::read_file(path), std::string(1000, 'a'));
  EXPECT_EQ(entries(tmp.path()), std::set<std::string>{"model.bin"});

  // And with the limit gone the same call works.
  concord::write_file_atomic(path, big);
  EXPECT_EQ(concord::read_file(path), big);
}

TEST(WriteErrors, MetricsWriterThrowsAndCutsTheTornLineOff) {
  TempDir tmp;
  const fs::path path = tmp / "metrics.jsonl";
  concord::MetricsWriter writer(path, true);
  writer.log(1, {{"train/loss", 2.5}});
  const auto size = fs::file_size(path);
  std::string message;
  {
    // Room for part of the next record only: the write is short, then fails.
    FileSizeLimit limit(size + 20);
    ASSERT_TRUE(limit.ok());
    message = io_error_of([&] { writer.log_json({{"step", 2}, {"note", std::string(200, 'x')}}); });
  }
  EXPECT_TRUE(has(message, path.string())) << message;
  EXPECT_TRUE(has(message, std::strerror(EFBIG))) << message;
  EXPECT_EQ(fs::file_size(path), size) << "the partial line stays in the file";
  // The run can go on writing whole records after the disk has room again.
  writer.log(3, {{"train/loss", 2.0}});
  const auto records = concord::read_metrics(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1]["step"], 3);
}

TEST(WriteErrors, ReadOnlyFolderIsAClearError) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a read-only mode does not stop writes";
  TempDir tmp;
  const fs::path dir = tmp / "run";
  fs::create_directories(dir);
  concord::write_file_atomic(dir / "config.json", std::string("{}\n"));
  fs::permissions(dir, fs::perms::owner_read | fs::perms::owner_exec);
  const std::string message =
      io_error_of([&] { concord::write_file_atomic(dir / "config.json", std::string("{\"a\":1}\n")); });
  const std::string metrics_message =
      io_error_of([&] { concord::MetricsWriter writer(dir / "metrics.jsonl", true); });
  fs::permissions(dir, fs::perms::owner_all);
  EXPECT_TRUE(has(message, (dir / "config.json").string())) << message;
  EXPECT_TRUE(has(message, std::strerror(EACCES))) << message;
  EXPECT_TRUE(has(metrics_message, (dir / "metrics.jsonl").string())) << metrics_message;
  EXPECT_EQ(concord::read_file(dir / "config.json"), "{}\n");
  EXPECT_EQ(entries(dir), std::set<std::string>{"config.json"});
}

TEST(RunFolderPaths, NamesFromConfigsCannotLeaveTheRunFolder) {
  TempDir tmp;
  concord::RunDirectory run(tmp / "run");
  EXPECT_EQ(run.file("shards/train", "shard_prefix"), tmp / "run" / "shards" / "train");
  EXPECT_EQ(run.file("./a/b.bin"), tmp / "run" / "./a/b.bin");
  EXPECT_EQ(run.chart("loss.png"), tmp / "run" / "charts" / "loss.png");
  auto refused = [&](const std::string& name, const std::string& needle) {
    try {
      (void)run.file(name, "shard_prefix");
      ADD_FAILURE() << "'" << name << "' was accepted";
    } catch (const concord::ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("shard_prefix: ", 0), 0u) << msg;  // names the key first
      EXPECT_TRUE(has(msg, needle)) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  };
  refused("../escape", "'..'");
  refused("shards/../../escape", "'..'");
  refused("a/..", "'..'");
  refused("/etc/passwd", "absolute");
  refused("", "empty");
  EXPECT_THROW((void)run.chart("../../x.png"), concord::ConfigError);
  EXPECT_THROW((void)concord::path_inside(tmp.path(), "..", "output"), concord::ConfigError);
  // A name that merely contains dots is a name.
  EXPECT_EQ(concord::path_inside(tmp.path(), "a..b/..c", "output"), tmp.path() / "a..b/..c");
}
