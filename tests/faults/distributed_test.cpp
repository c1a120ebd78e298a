// Data parallel across processes on loopback (Gloo), through `concord launch` as a user runs
// it: 2 ranks give the weights of 1 process on the union of their batches; ZeRO-1 gives the
// weights of plain data parallel and its checkpoint resumes on another world size; a rank that
// dies makes the others exit with a clear error instead of hanging.
#include <gtest/gtest.h>

#include <signal.h>

#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include "cli_runner.h"
#include "concord/core/config.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/io/safetensors.h"
#include "faults_support.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::testing::CliProcess;
using concord::testing::run_cli;
using concord::testing::run_cli_env;

namespace {

// A pretrain run: 6 steps, checkpoints at 3 and 6. `batch_size` is per process.
fs::path pretrain_config(const fs::path& dir) {
  return concord::testing::write_file(dir / "pre.json", R"({"task": "pretrain",
    "model": ")" + ::concord::testing::source_dir().string() + R"(/configs/models/tiny-pangu-pi.json",
    "tokenizer": "bytes",
    "data": {"block_size": 32, "builtin_documents": 40, "eval_fraction": 0.2}, "batch_size": 8,
    "train": {"max_steps": 6, "lr": 0.003, "warmup_steps": 2, "checkpoint_every": 3,
              "keep_checkpoints": 0, "eval_every": 3, "progress": false}})");
}

std::map<std::string, at::Tensor> weights(const fs::path& run) {
  return concord::io::load_safetensors(run / "model/model.safetensors");
}

double max_difference(const fs::path& a, const fs::path& b) {
  const auto x = weights(a), y = weights(b);
  EXPECT_EQ(x.size(), y.size());
  double worst = 0;
  for (const auto& [name, t] : x) {
    worst = std::max(worst, (t - y.at(name)).abs().max().item<double>());
  }
  return worst;
}

// fp32 sums taken in another order, then AdamW's m / sqrt(v), which magnifies the rounding of
// gradients near zero: equal within allclose(rtol 1e-4, atol 1e-5) after 6 steps, where a
// mistake (a gradient not averaged, a rank's batch left out) moves weights by ~1e-3.
void expect_fp32_close(const fs::path& a, const fs::path& b) {
  const auto x = weights(a), y = weights(b);
  ASSERT_EQ(x.size(), y.size());
  for (const auto& [name, t] : x) {
    EXPECT_TRUE(at::allclose(t, y.at(name), 1e-4, 1e-5))
        << name << ": max difference " << (t - y.at(name)).abs().max().item<double>();
  }
}

const std::string kEnv = "CONCORD_DIST_TIMEOUT=60";

}  // namespace

TEST(Distributed, TwoRanksTrainAsOneProcessOnTheWholeBatch) {
  concord::testing::TempDir tmp;
  const auto cfg = pretrain_config(tmp.path());
  auto r = run_cli("run " + cfg.string() + " --out " + (tmp / "one").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, "launch -n 2 -- run " + cfg.string() + " --out " + (tmp / "two").string() +
                            " --set batch_size=4");
  ASSERT_EQ(r.status, 0) << r.output;
  // Rank 0 alone wrote the run folder; rank 1's scratch folder is gone.
  EXPECT_TRUE(fs::exists(tmp / "two/checkpoints/step-00000006/training_state.safetensors"));
  EXPECT_TRUE(fs::exists(tmp / "two/report.md"));
  expect_fp32_close(tmp / "one", tmp / "two");
  // The same losses were logged: step 1's loss is the mean over all 8 sequences.
  const auto one = concord::read_metrics(tmp / "one/metrics.jsonl");
  const auto two = concord::read_metrics(tmp / "two/metrics.jsonl");
  ASSERT_FALSE(one.empty());
  ASSERT_EQ(one.size(), two.size());
  EXPECT_NEAR(one[0]["train/loss"].get<double>(), two[0]["train/loss"].get<double>(), 1e-5);
  EXPECT_EQ(one[0]["train/tokens"], two[0]["train/tokens"]);
  // Buckets sent during backward or after it: the same sums of the same buffers.
  r = run_cli_env(kEnv, "launch -n 2 -- run " + cfg.string() + " --out " + (tmp / "after").string() +
                            " --set batch_size=4 --set train.overlap_grad_reduce=false");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(concord::read_file(tmp / "after/model/model.safetensors"),
            concord::read_file(tmp / "two/model/model.safetensors"));
}

// reward_em's M-steps: every rank takes its slice of the same cluster-balanced global batch, so
// 2 ranks x 2 pairs fit the mixture that 1 process x 4 pairs fits.
TEST(Distributed, TwoRanksFitTheRewardMixtureOfOneProcess) {
  concord::testing::Inputs in;
  const auto cfg = concord::testing::write_file(in.tmp / "em.json", R"({"task": "reward_em",
    "model": ")" + in.base.string() + R"(", "tokenizer": "bytes", "data": ")" + in.pairs.string() + R"(",
    "select_clusters": [1, 2], "em": {"max_iterations": 2, "m_step_steps": 4, "batch_size": 4},
    "train": {"lr": 1e-3, "progress": false}})");
  auto r = run_cli("run " + cfg.string() + " --out " + (in.tmp / "one").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, "launch -n 2 -- run " + cfg.string() + " --out " + (in.tmp / "two").string() +
                            " --set em.batch_size=2");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto one = concord::load_json_file(in.tmp / "one/em.json");
  const auto two = concord::load_json_file(in.tmp / "two/em.json");
  ASSERT_EQ(one["history"].size(), two["history"].size());
  for (size_t i = 0; i < one["history"].size(); ++i) {
    const double a = one["history"][i]["log_likelihood"].get<double>();
    const double b = two["history"][i]["log_likelihood"].get<double>();
    EXPECT_NEAR(a, b, 1e-5 * std::abs(a)) << "EM iteration " << i + 1;
  }
  EXPECT_EQ(one["assignment"], two["assignment"]);
}

TEST(Distributed, ShardedOptimiserMatchesAndResumesOnAnotherWorldSize) {
  concord::testing::TempDir tmp;
  const auto cfg = pretrain_config(tmp.path());
  const std::string two_ranks = "launch -n 2 -- run " + cfg.string() + " --set batch_size=4";
  auto r = run_cli_env(kEnv, two_ranks + " --out " + (tmp / "plain").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, two_ranks + " --out " + (tmp / "zero").string() +
                            " --set train.shard_optimizer=true");
  ASSERT_EQ(r.status, 0) << r.output;
  // Each parameter is updated by one rank with the same arithmetic and broadcast: bit-equal.
  EXPECT_EQ(max_difference(tmp / "plain", tmp / "zero"), 0.0);
  // Rank 1's share of AdamW's state is in the checkpoint, not in rank 0's file.
  const auto shard = tmp / "zero/checkpoints/step-00000003/optimizer/rank-00001-of-00002.safetensors";
  ASSERT_TRUE(fs::exists(shard));
  const auto rank1 = concord::io::load_safetensors(shard);
  const auto rank0 = concord::io::load_safetensors(tmp / "zero/checkpoints/step-00000003/training_state.safetensors");
  EXPECT_FALSE(rank1.empty());
  for (const auto& [key, t] : rank1) EXPECT_EQ(rank0.count(key), 0u) << key;

  // 3 steps on 2 ZeRO ranks, resumed on 1 process with the same global batch: the moments of
  // both shards are found, and the run ends where one process ends.
  r = run_cli("run " + cfg.string() + " --out " + (tmp / "one").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, two_ranks + " --out " + (tmp / "moved").string() +
                            " --set train.shard_optimizer=true --set train.max_steps=3");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli("run " + cfg.string() + " --out " + (tmp / "moved").string() + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  expect_fp32_close(tmp / "one", tmp / "moved");
}

TEST(Distributed, ADeadRankEndsTheOthersWithAClearError) {
  concord::testing::TempDir tmp;
  const auto cfg = pretrain_config(tmp.path());
  const std::string port = std::to_string(29000 + ::getpid() % 2000);
  auto rank = [&](int r) {
    return std::make_unique<CliProcess>(
        std::vector<std::string>{"run", cfg.string(), "--out", (tmp / "run").string(), "--set",
                                 "batch_size=4", "--set", "train.max_steps=100000", "--set",
                                 "train.checkpoint_every=0"},
        std::vector<std::string>{"RANK=" + std::to_string(r), "WORLD_SIZE=2",
                                 "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port,
                                 "CONCORD_NUM_THREADS=1", "CONCORD_DIST_TIMEOUT=60"},
        tmp / ("rank" + std::to_string(r) + ".log"));
  };
  auto r0 = rank(0);
  auto r1 = rank(1);
  ASSERT_TRUE(concord::testing::wait_until(
      [&] { return fs::exists(tmp / "run/metrics.jsonl") && fs::file_size(tmp / "run/metrics.jsonl") > 0; },
      60));
  r1->signal(SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(concord::testing::wait_until([&] { return r0->finished(); }, 30))
      << "rank 0 still running 30 s after its peer died";
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r0->exit_status(), 1);
  const std::string log = concord::read_file(tmp / "rank0.log");
  EXPECT_NE(log.find("distributed: all-reduce failed on rank 0 of 2"), std::string::npos) << log;
  RecordProperty("seconds_to_exit", std::to_string(seconds));
}

// --resume in a data-parallel job: every rank continues from the checkpoint in rank 0's run
// folder, for a task trained through fit() (pretrain) and for one with a loop of its own (ppo,
// whose rollouts every rank repeats): both end bit-equal to the same job run without a break.
TEST(Distributed, EveryRankResumesFromRankZerosCheckpoint) {
  concord::testing::Inputs in;
  const auto cfg = pretrain_config(in.tmp.path());
  const std::string two = "launch -n 2 -- run " + cfg.string() + " --set batch_size=4";
  auto r = run_cli_env(kEnv, two + " --out " + (in.tmp / "whole").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, two + " --out " + (in.tmp / "part").string() + " --set train.max_steps=3");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, two + " --out " + (in.tmp / "part").string() + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(max_difference(in.tmp / "whole", in.tmp / "part"), 0.0);

  const auto ppo = concord::testing::write_file(in.tmp / "ppo.json", R"({"task": "ppo",
    "policy": ")" + in.base.string() + R"(", "tokenizer": "bytes",
    "rewards": ")" + in.reward.string() + R"(", "prompts": ")" + in.prompts.string() + R"(",
    "iterations": 4, "checkpoint_every": 1, "aggregator": {"name": "min"},
    "ppo": {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1},
    "generation": {"max_new_tokens": 4}, "train": {"lr": 1e-3, "progress": false}})");
  const std::string ppo_two = "launch -n 2 -- run " + ppo.string();
  r = run_cli_env(kEnv, ppo_two + " --out " + (in.tmp / "ppo-whole").string());
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, ppo_two + " --out " + (in.tmp / "ppo-part").string() + " --set iterations=2");
  ASSERT_EQ(r.status, 0) << r.output;
  r = run_cli_env(kEnv, ppo_two + " --out " + (in.tmp / "ppo-part").string() + " --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(concord::read_file(in.tmp / "ppo-part/policy/model.safetensors"),
            concord::read_file(in.tmp / "ppo-whole/policy/model.safetensors"));
}
