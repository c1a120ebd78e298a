// The `concord` driver end to end: exit codes, one-line errors, run folders.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <sys/wait.h>

#include "concord/core/config.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/data/token_shard.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

struct Result {
  int status;
  std::string output;  // stdout and stderr together
};

Result run_cli(const std::string& args) {
  const std::string cmd = std::string(CONCORD_BINARY_DIR) + "/bin/concord " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

size_t lines(const std::string& s) {
  size_t n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST(Cli, HelpAndVersion) {
  auto help = run_cli("--help");
  EXPECT_EQ(help.status, 0);
  for (const char* cmd : {"version", "params", "run", "tumlu-score", "quickstart"}) {
    EXPECT_NE(help.output.find(cmd), std::string::npos) << cmd;
  }
  auto version = run_cli("version");
  EXPECT_EQ(version.status, 0);
  EXPECT_NE(version.output.find("concord 0."), std::string::npos);
  EXPECT_NE(version.output.find("libtorch"), std::string::npos);
}

TEST(Cli, BadInputIsOneLineAndNonZero) {
  concord::testing::TempDir tmp;
  auto bad_json = concord::testing::write_file(tmp / "bad.json", "{\"task\": \"tokenize\",\n");
  auto r = run_cli("run " + bad_json.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("bad.json: line 2"), std::string::npos) << r.output;

  auto unknown_key = concord::testing::write_file(
      tmp / "typo.json", R"({"task": "tokenize", "input": "x.jsonl", "tokens_per_shrad": 5})");
  r = run_cli("run " + unknown_key.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("unknown key 'tokens_per_shrad' (did you mean 'tokens_per_shard'?)"),
            std::string::npos)
      << r.output;

  r = run_cli("run " + unknown_key.string() + " --set tokens_per_shard=many");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--set tokens_per_shard=many"), std::string::npos) << r.output;

  auto unknown_task = concord::testing::write_file(tmp / "t.json", R"({"task": "dance"})");
  r = run_cli("run " + unknown_task.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("unknown task 'dance' (valid: "), std::string::npos) << r.output;

  auto planned = concord::testing::write_file(tmp / "p.json", R"({"task": "ppo"})");
  r = run_cli("run " + planned.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("task 'ppo' is not available in this build yet"), std::string::npos);

  r = run_cli("run " + (tmp / "missing.json").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("missing.json: cannot open"), std::string::npos) << r.output;
}

TEST(Cli, TokenizeTaskWritesARunFolder) {
  concord::testing::TempDir tmp;
  auto corpus = concord::testing::write_file(tmp / "c.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"c\"}\n");
  auto cfg = concord::testing::write_file(
      tmp / "run.json",
      "{\"task\": \"tokenize\", \"input\": \"" + corpus.string() + "\", \"tokens_per_shard\": 4}");
  auto out = tmp / "run";
  auto r = run_cli("run " + cfg.string() + " --out " + out.string() + " --set seed=7");
  ASSERT_EQ(r.status, 0) << r.output;
  auto config = concord::parse_json(concord::read_file(out / "config.json"), "config.json");
  EXPECT_EQ(config["seed"], 7);
  EXPECT_EQ(config["tokenizer"], "bytes");
  EXPECT_EQ(config["out_dir"], out.string());
  EXPECT_TRUE(fs::exists(out / "report.md"));
  auto metrics = concord::read_metrics(out / "metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0]["data/tokens"], 5);  // a b EOS c EOS
  EXPECT_EQ(metrics[0]["data/shards"], 2);  // 4 + 1 tokens
  concord::data::TokenShard first(out / "shards/train_000000.bin");
  EXPECT_EQ(first.size(), 4);
  EXPECT_EQ(first.at(0), 'a');
  EXPECT_EQ(first.at(2), 256);
}

TEST(Cli, QuickstartRunsTheAvailableStagesAndNamesTheRest) {
  concord::testing::TempDir tmp;
  auto r = run_cli("quickstart --out " + (tmp / "qs").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "qs/report.md");
  EXPECT_NE(report.find("[data](data/report.md)"), std::string::npos) << report;
  EXPECT_NE(report.find("2000 documents"), std::string::npos);
  EXPECT_NE(report.find("not yet available"), std::string::npos);
  for (const char* f : {"data/config.json", "data/metrics.jsonl", "data/report.md",
                        "data/charts/document_lengths.png"}) {
    EXPECT_TRUE(fs::exists(tmp / "qs" / f)) << f;
  }
}

TEST(Cli, TumluScoreRegradesStoredOutputs) {
  concord::testing::TempDir tmp;
  const std::string outputs = concord::testing::fixture("eval/outputs").string();
  auto r = run_cli("tumlu-score " + outputs + " --out " + (tmp / "scores").string());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("org/model-a"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("47.92"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(tmp / "scores/results.json"));
  EXPECT_TRUE(fs::exists(tmp / "scores/report.md"));

  r = run_cli("tumlu-score " + outputs + " --extractor fancy");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("fancy"), std::string::npos) << r.output;

  r = run_cli("tumlu-score " + tmp.path().string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("no TUMLU outputs found"), std::string::npos) << r.output;
}

TEST(Cli, ParamsCountsExactly) {
  const std::string configs = std::string(CONCORD_SOURCE_DIR) + "/configs/models/";
  auto r = run_cli("params " + configs + "gpt2.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("parameters: 124439808\n"), std::string::npos) << r.output;
  r = run_cli("params " + configs + "pangu-pi-7b.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("parameters: 6727363200\n"), std::string::npos) << r.output;

  concord::testing::TempDir tmp;
  auto bad = concord::testing::write_file(tmp / "m.json", R"({"family": "gpt2", "n_layre": 2})");
  r = run_cli("params " + bad.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("m.json"), std::string::npos) << r.output;
}

TEST(Cli, TumluTaskEvaluatesAModelIntoTheBenchmarkLayout) {
  const auto data = concord::testing::tumlu_dir();
  if (data.empty()) GTEST_SKIP() << "TUMLU-mini not found: set CONCORD_TUMLU_DIR";
  concord::testing::TempDir tmp;
  auto cfg = concord::testing::write_file(
      tmp / "tumlu.json",
      "{\"task\": \"tumlu\", \"model\": \"" + std::string(CONCORD_SOURCE_DIR) +
          "/configs/models/tiny-llama.json\", \"tokenizer\": \"bytes\", \"data_dir\": \"" +
          data.string() +
          "\", \"languages\": [\"uyghur\"], \"protocol\": \"loglik\", \"max_items_per_subject\": 1}");
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "run/report.md");
  EXPECT_NE(report.find("| tiny-llama (loglik) |"), std::string::npos) << report;
  EXPECT_NE(report.find("uig"), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(tmp / "run/results.json"));
  size_t subject_files = 0;
  for (auto& e : fs::recursive_directory_iterator(tmp / "run/uyghur/outputs/loglik")) {
    subject_files += e.path().extension() == ".json";
  }
  EXPECT_GE(subject_files, 4u);
  // The stored outputs re-grade to the same table with the command-line scorer.
  auto rescored = run_cli("tumlu-score " + (tmp / "run").string());
  EXPECT_EQ(rescored.status, 0) << rescored.output;
  EXPECT_NE(rescored.output.find("tiny-llama"), std::string::npos) << rescored.output;
}
