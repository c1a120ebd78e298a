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
#include "cli_runner.h"
#include "test_support.h"

namespace fs = std::filesystem;

namespace {

using concord::testing::run_cli;
using concord::testing::run_cli_env;

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

  auto planned = concord::testing::write_file(tmp / "p.json", R"({"task": "pipeline"})");
  r = run_cli("run " + planned.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("task 'pipeline' is not available in this build yet"), std::string::npos);

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
  auto r = run_cli("quickstart --smoke --out " + (tmp / "qs").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "qs/report.md");
  EXPECT_NE(report.find("[data](data/report.md)"), std::string::npos) << report;
  EXPECT_NE(report.find("2000 documents"), std::string::npos);
  EXPECT_NE(report.find("[pretrain](pretrain/report.md)"), std::string::npos) << report;
  EXPECT_NE(report.find("validation loss over 1 seed(s): Vanilla"), std::string::npos) << report;
  EXPECT_NE(report.find("what it shows"), std::string::npos) << report;
  EXPECT_NE(report.find("Smoke size"), std::string::npos) << report;
  // The closing summary names every stage's report.
  EXPECT_NE(r.output.find("Concord quickstart (smoke size): 6 stages"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find((tmp / "qs/koala/report.md").string()), std::string::npos) << r.output;
  EXPECT_NE(report.find("[maxmin](maxmin/report.md)"), std::string::npos) << report;
  EXPECT_NE(report.find("minority: single"), std::string::npos) << report;
  const concord::Json maxmin = concord::load_json_file(tmp / "qs/maxmin/results.json");
  EXPECT_TRUE(maxmin["min"]["minority"]["win_rate"].is_number());
  EXPECT_NE(report.find("[koala](koala/report.md)"), std::string::npos) << report;
  const concord::Json koala = concord::load_json_file(tmp / "qs/koala/results.json");
  EXPECT_TRUE(koala["self_attention"]["output_mse"]["mean"].is_number());
  EXPECT_TRUE(koala["output_only"]["output_mse"]["mean"].is_number());
  const std::string pretrain = concord::read_file(tmp / "qs/pretrain/report.md");
  EXPECT_NE(pretrain.find("| block 4 |"), std::string::npos) << pretrain;
  for (const char* f : {"data/config.json", "data/metrics.jsonl", "data/report.md",
                        "data/charts/document_lengths.png", "pretrain/results.json",
                        "pretrain/charts/diversity.png", "pretrain/models/siaf+as/model.safetensors",
                        "pretrain/models/vanilla/config.json"}) {
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
  const std::string configs = ::concord::testing::source_dir().string() + "/configs/models/";
  auto r = run_cli("params " + configs + "gpt2.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("parameters: 124439808\n"), std::string::npos) << r.output;
  r = run_cli("params " + configs + "pangu-pi-7b.json");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("parameters: 6727363200\n"), std::string::npos) << r.output;
  // diffusers U-Nets: SDXL's and the KOALA students'; SDXL's VAE (the counts diffusers 0.42 gives).
  for (const auto& [name, count] : std::vector<std::pair<std::string, std::string>>{
           {"sdxl-unet", "2567463684"}, {"koala-1b", "1161184324"}, {"koala-700m", "782822724"},
           {"sdxl-vae", "83653863"},
           // SDXL's text encoders (transformers 5.24 on the meta device): CLIP ViT-L/14's and
           // OpenCLIP bigG's with its projection.
           {"sdxl-text-encoder", "123060480"}, {"sdxl-text-encoder-2", "694659840"}}) {
    r = run_cli("params " + configs + name + ".json");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("parameters: " + count + "\n"), std::string::npos) << name << r.output;
  }

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
      "{\"task\": \"tumlu\", \"model\": \"" + ::concord::testing::source_dir().string() +
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

TEST(Cli, DiversityTaskReportsEveryLayer) {
  concord::testing::TempDir tmp;
  const std::string model = ::concord::testing::source_dir().string() + "/configs/models/tiny-gpt2.json";
  // Built-in corpus, fresh seeded weights.
  auto cfg = concord::testing::write_file(
      tmp / "div.json", "{\"task\": \"diversity\", \"model\": \"" + model +
                            "\", \"tokenizer\": \"bytes\", \"documents\": 6, \"max_length\": 32}");
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "run/report.md");
  EXPECT_NE(report.find("| 0 | embedding |"), std::string::npos) << report;
  EXPECT_NE(report.find("| 2 | block 2 |"), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(tmp / "run/charts/diversity_relative.png"));
  auto metrics = concord::read_metrics(tmp / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 3u);  // embedding + 2 blocks
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_EQ(metrics[l]["step"], l);
    EXPECT_GT(metrics[l]["diversity/relative"].get<double>(), 0.0);
    EXPECT_LE(metrics[l]["diversity/relative"].get<double>(), 1.0);
  }
  auto summary = concord::parse_json(concord::read_file(tmp / "run/diversity.json"), "diversity.json");
  EXPECT_EQ(summary["sequences"], 6);
  EXPECT_GT(summary["truncated"].get<int>(), 0);  // built-in documents are longer than 32 bytes

  // A JSONL file: every record measured; a record without "text" names its line.
  auto corpus = concord::testing::write_file(
      tmp / "c.jsonl", "{\"text\": \"the cat sat on the mat\"}\n{\"text\": \"a dog\"}\n");
  r = run_cli("run " + cfg.string() + " --out " + (tmp / "run2").string() + " --set input=" +
              corpus.string() + " --set documents=0");
  ASSERT_EQ(r.status, 0) << r.output;
  summary = concord::parse_json(concord::read_file(tmp / "run2/diversity.json"), "diversity.json");
  EXPECT_EQ(summary["sequences"], 2);
  EXPECT_EQ(summary["tokens"], 23 + 6);  // bytes + the EOS the byte tokenizer appends
  auto bad = concord::testing::write_file(tmp / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n");
  r = run_cli("run " + cfg.string() + " --out " + (tmp / "run3").string() + " --set input=" +
              bad.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("bad.jsonl:2"), std::string::npos) << r.output;
}

// `concord run --resume` after a crash: the run restarts from its newest checkpoint and ends
// with byte-identical weights to an uninterrupted run.
TEST(Cli, PretrainResumesBitForBit) {
  concord::testing::TempDir tmp;
  auto cfg = concord::testing::write_file(tmp / "pre.json", R"({"task": "pretrain",
    "model": ")" + ::concord::testing::source_dir().string() + R"(/configs/models/tiny-pangu-pi.json",
    "tokenizer": "bytes", "data": {"block_size": 32, "builtin_documents": 40}, "batch_size": 4,
    "train": {"max_steps": 6, "lr": 0.003, "warmup_steps": 2, "checkpoint_every": 3,
              "keep_checkpoints": 0, "progress": false}})");
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "full").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto full = tmp / "full";
  EXPECT_TRUE(fs::exists(full / "checkpoints/step-00000003/training_state.safetensors"));
  EXPECT_TRUE(fs::exists(full / "charts/loss.png"));

  // The crash: the run folder as it was after step 3's checkpoint.
  const auto part = tmp / "part";
  fs::create_directories(part / "checkpoints");
  fs::copy(full / "checkpoints/step-00000003", part / "checkpoints/step-00000003",
           fs::copy_options::recursive);
  concord::testing::write_file(part / "checkpoints/latest", "step-00000003\n");
  r = run_cli("run " + cfg.string() + " --out " + part.string() + " --resume --set seed=99");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(concord::read_file(part / "model/model.safetensors"),
            concord::read_file(full / "model/model.safetensors"));
  const auto metrics = concord::read_metrics(part / "metrics.jsonl");
  int64_t first_logged = -1;
  for (const auto& m : metrics) {
    if (m.contains("train/loss")) {
      first_logged = m["step"].get<int64_t>();
      break;
    }
  }
  EXPECT_EQ(first_logged, 4);
}

TEST(Cli, SftTaskTrainsOnCompletions) {
  concord::testing::TempDir tmp;
  std::string records;
  for (int i = 0; i < 12; ++i) {
    records += "{\"prompt\": \"Q: " + std::to_string(i) + "+1=\", \"completion\": \" " +
               std::to_string(i + 1) + "\"}\n";
  }
  records += "{\"prompt\": \"no completion\"}\n";
  auto data = concord::testing::write_file(tmp / "sft.jsonl", records);
  auto cfg = concord::testing::write_file(tmp / "sft.json", R"({"task": "sft",
    "model": ")" + ::concord::testing::source_dir().string() + R"(/configs/models/tiny-llama.json",
    "tokenizer": "bytes", "data": {"train": ")" + data.string() + R"(", "max_length": 32,
    "eval_fraction": 0.25}, "batch_size": 4, "train": {"max_steps": 3, "progress": false}})");
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "bad").string());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("sft.jsonl:13"), std::string::npos) << r.output;

  r = run_cli("run " + cfg.string() + " --out " + (tmp / "ok").string() +
              " --set data.on_bad_record=skip --set data.packing=true");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "ok/report.md");
  EXPECT_NE(report.find("1 bad record"), std::string::npos) << report;
  EXPECT_NE(report.find("evaluation loss"), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(tmp / "ok/model/config.json"));
}

TEST(Cli, GrapeTaskScoresSelectsAndReportsBadRecords) {
  concord::testing::TempDir tmp;
  // The fixture pool plus a record without responses on line 6.
  const std::string pool_text = concord::read_file(concord::testing::fixture("grape/pool.jsonl")) +
                                "{\"id\": \"broken\", \"instruction\": \"x\"}\n";
  const auto pool = concord::testing::write_file(tmp / "pool.jsonl", pool_text);
  auto cfg = concord::testing::write_file(
      tmp / "grape.json", "{\"task\": \"grape\", \"model\": \"" + ::concord::testing::source_dir().string() +
                              "/configs/models/tiny-gpt2.json\", \"tokenizer\": \"bytes\", "
                              "\"pool\": \"" + pool.string() +
                              "\", \"max_length\": 64, \"on_bad_record\": \"skip\"}");
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "run").string());
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string report = concord::read_file(tmp / "run/report.md");
  EXPECT_NE(report.find("pool.jsonl:6"), std::string::npos) << report;
  EXPECT_NE(report.find("| terse |"), std::string::npos) << report;
  EXPECT_TRUE(fs::exists(tmp / "run/charts/grape_score_histogram.png"));
  // One kept response per pool; the byte tokenizer gives the fixture's token counts, so one
  // candidate is too long for 64 positions and one is empty.
  const std::string selected = concord::read_file(tmp / "run/selected.jsonl");
  EXPECT_EQ(lines(selected), 5u);
  EXPECT_NE(selected.find("\"prompt\":\"What is 2 plus 3?\""), std::string::npos) << selected;
  auto metrics = concord::read_metrics(tmp / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  EXPECT_EQ(metrics[0]["grape/bad_records"], 1);
  EXPECT_EQ(metrics[0]["grape/skipped_too_long"], 1);
  EXPECT_EQ(metrics[0]["grape/skipped_empty"], 1);
  EXPECT_EQ(metrics[0]["grape/deduplicated"], 2);
  EXPECT_EQ(metrics[1]["grape/selected"], 5);

  // Under `stop` the bad line ends the run with its FILE:LINE.
  r = run_cli("run " + cfg.string() + " --out " + (tmp / "run2").string() +
              " --set on_bad_record=stop");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(lines(r.output), 1u) << r.output;
  EXPECT_NE(r.output.find("pool.jsonl:6"), std::string::npos) << r.output;
}

// Two ranks launched as torchrun launches them, one after the other: the first writes its part
// and waits; the second finds both parts, merges and selects what a one-process run selects.
TEST(Cli, GrapeTaskMergesTheRanksParts) {
  concord::testing::TempDir tmp;
  auto cfg = concord::testing::write_file(
      tmp / "grape.json", "{\"task\": \"grape\", \"model\": \"" + ::concord::testing::source_dir().string() +
                              "/configs/models/tiny-gpt2.json\", \"tokenizer\": \"bytes\", "
                              "\"pool\": \"" + concord::testing::fixture("grape/pool.jsonl").string() +
                              "\", \"max_length\": 64, \"batch_size\": 1, \"share_prompt\": false}");
  const std::string run = "run " + cfg.string() + " --out " + (tmp / "run").string();
  for (int rank : {0, 1}) {
    auto r = run_cli_env("RANK=" + std::to_string(rank) + " WORLD_SIZE=2", run);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_TRUE(fs::exists(tmp / ("run/scores.rank" + std::to_string(rank) + "-of-2.jsonl")));
    EXPECT_EQ(fs::exists(tmp / "run/selected.jsonl"), rank == 1);
  }
  auto single = run_cli("run " + cfg.string() + " --out " + (tmp / "single").string());
  ASSERT_EQ(single.status, 0) << single.output;
  // Same pools, same picks; one candidate a pass, so no batch differs and the numbers match to
  // the last digit.
  EXPECT_EQ(concord::read_file(tmp / "run/selected.jsonl"),
            concord::read_file(tmp / "single/selected.jsonl"));
  EXPECT_EQ(concord::read_file(tmp / "run/scores.jsonl"),
            concord::read_file(tmp / "single/scores.jsonl"));
}
