// The MaxMin-RLHF tasks through run_task, as `concord run` runs them: reward -> reward_em -> ppo
// (and grpo, dpo) on a tiny byte-level model, the maxmin_experiment's results.json, bit-exact
// resume of ppo, and a reward model gone NaN stopping the run with its checkpoint intact.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/io/safetensors.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/rlhf/policy.h"
#include "concord/tasks/tasks.h"
#include "concord/train/checkpoint.h"
#include "concord/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::Json;
using concord::tasks::run_task;

namespace {

// A tiny byte-level GPT-2 saved as a transformers folder, and preference data of two groups:
// group a prefers the answer with more 'x', group b the shorter one.
struct Fixture {
  concord::testing::TempDir tmp;
  fs::path base, pairs, prompts;

  Fixture() {
    torch::manual_seed(0);
    concord::lm::CausalLM m(concord::lm::load_model_config(::concord::testing::source_dir().string() +
                                                           "/configs/models/tiny-gpt2.json"));
    base = tmp / "base";
    concord::lm::save_pretrained(m, base);
    std::string lines, prompt_lines;
    const char* answers[][2] = {{"xxxx", "yy"}, {"xx", "y"}, {"xxx", "yyyy"}, {"x", "zzz"}};
    for (int u = 0; u < 6; ++u) {
      const bool a = u < 4;
      for (int i = 0; i < 6; ++i) {
        const auto& pair = answers[i % 4];
        // a: more x wins; b: shorter wins.
        std::string c = pair[0], r = pair[1];
        if (!a && c.size() > r.size()) std::swap(c, r);
        lines += "{\"prompt\":\"q" + std::to_string(i) + "\",\"chosen\":\"" + c + "\",\"rejected\":\"" + r +
                 "\",\"user\":\"u" + std::to_string(u) + "\",\"group\":\"" + (a ? "a" : "b") + "\"}\n";
      }
    }
    lines += "{\"prompt\":\"q\",\"chosen\":\"same\",\"rejected\":\"same\",\"user\":\"u0\"}\n";  // bad
    pairs = concord::testing::write_file(tmp / "pairs.jsonl", lines);
    for (int i = 0; i < 8; ++i) prompt_lines += "{\"prompt\":\"q" + std::to_string(i) + "\"}\n";
    prompts = concord::testing::write_file(tmp / "prompts.jsonl", prompt_lines);
  }

  std::string path(const std::string& name) const { return (tmp / name).string(); }
};

std::string ppo_config(const Fixture& f, const std::string& rewards, int iterations) {
  return R"({"task": "ppo", "policy": ")" + f.base.string() + R"(", "tokenizer": "bytes",
    "rewards": ")" + rewards + R"(", "prompts": ")" + f.prompts.string() + R"(",
    "iterations": )" + std::to_string(iterations) + R"(, "checkpoint_every": 1,
    "aggregator": {"name": "min"},
    "ppo": {"batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "normalize_rewards": true},
    "generation": {"max_new_tokens": 4},
    "train": {"lr": 1e-3}})";
}

std::map<std::string, at::Tensor> policy_weights(const std::string& run) {
  return concord::io::load_safetensors(fs::path(run) / "policy" / "model.safetensors");
}

}  // namespace

TEST(RlhfTasks, RewardThenEmThenPpoAndDpo) {
  Fixture f;
  const std::string reward = run_task(
      R"({"task": "reward", "model": ")" + f.base.string() + R"(", "tokenizer": "bytes",
          "data": ")" + f.pairs.string() + R"(", "batch_size": 4, "eval_fraction": 0.2,
          "train": {"max_steps": 6, "lr": 1e-3, "progress": false}})",
      {}, f.path("reward"));
  EXPECT_TRUE(fs::exists(fs::path(reward) / "reward" / "model.safetensors"));
  const Json rconfig = concord::load_json_file(fs::path(reward) / "reward" / "config.json");
  EXPECT_EQ(rconfig["architectures"][0], "GPT2ForSequenceClassification");
  const auto metrics = concord::read_metrics(fs::path(reward) / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  bool accuracy = false, eval_accuracy = false;
  for (const auto& m : metrics) {
    accuracy = accuracy || m.contains("train/accuracy");
    eval_accuracy = eval_accuracy || m.contains("eval/accuracy");
  }
  EXPECT_TRUE(accuracy);
  EXPECT_TRUE(eval_accuracy);
  // The identical pair is reported with its line, not fatal.
  const std::string report = concord::read_file(fs::path(reward) / "report.md");
  EXPECT_NE(report.find("pairs.jsonl:37"), std::string::npos) << report;

  const std::string em = run_task(
      R"({"task": "reward_em", "model": ")" + f.base.string() + R"(", "tokenizer": "bytes",
          "data": ")" + f.pairs.string() + R"(", "select_clusters": [1, 2],
          "em": {"max_iterations": 2, "m_step_steps": 3, "batch_size": 4},
          "train": {"lr": 1e-3}})",
      {}, f.path("em"));
  const Json emj = concord::load_json_file(fs::path(em) / "em.json");
  EXPECT_EQ(emj["selection"].size(), 2u);
  EXPECT_EQ(emj["assignment"].size(), 6u);
  EXPECT_TRUE(emj.contains("purity"));
  EXPECT_TRUE(fs::exists(fs::path(em) / "rewards"));

  const std::string ppo = run_task(ppo_config(f, (fs::path(em) / "rewards").string(), 2), {}, f.path("ppo"));
  const auto ppo_metrics = concord::read_metrics(fs::path(ppo) / "metrics.jsonl");
  ASSERT_EQ(ppo_metrics.size(), 2u);
  for (const char* key : {"objective/kl", "objective/scores", "objective/rlhf_reward",
                          "policy/clipfrac_avg", "loss/value_avg", "val/ratio"}) {
    EXPECT_TRUE(ppo_metrics[1].contains(key)) << key;
  }
  EXPECT_TRUE(fs::exists(fs::path(ppo) / "policy" / "model.safetensors"));

  // Frozen models in bf16: half their memory, same metrics present.
  run_task(ppo_config(f, (fs::path(em) / "rewards").string(), 1), {"frozen_dtype=bfloat16"}, f.path("bf16"));
  EXPECT_TRUE(concord::read_metrics(fs::path(f.path("bf16")) / "metrics.jsonl")[0].contains("objective/kl"));

  run_task(ppo_config(f, (fs::path(reward) / "reward").string(), 1),
           {"algorithm=grpo", "grpo.batch_size=2", "grpo.num_generations=2", "grpo.mini_batch_size=4"},
           f.path("grpo"));
  EXPECT_TRUE(concord::read_metrics(fs::path(f.path("grpo")) / "metrics.jsonl")[0].contains("reward_std"));

  const std::string dpo = run_task(
      R"({"task": "dpo", "policy": ")" + f.base.string() + R"(", "tokenizer": "bytes",
          "data": ")" + f.pairs.string() + R"(", "groups": ")" + (fs::path(em) / "em.json").string() + R"(",
          "batch_size": 4, "train": {"max_steps": 3, "lr": 1e-4, "progress": false}})",
      {}, f.path("dpo"));
  EXPECT_NE(concord::read_file(fs::path(dpo) / "report.md").find("group-robust"), std::string::npos);
}

TEST(RlhfTasks, PpoResumesBitExactAndStopsOnNanRewards) {
  Fixture f;
  const std::string reward = run_task(
      R"({"task": "reward", "model": ")" + f.base.string() + R"(", "tokenizer": "bytes",
          "data": ")" + f.pairs.string() + R"(", "batch_size": 4,
          "train": {"max_steps": 2, "progress": false}})",
      {}, f.path("reward"));
  const std::string rewards = (fs::path(reward) / "reward").string();
  const std::string whole = run_task(ppo_config(f, rewards, 3), {}, f.path("whole"));
  run_task(ppo_config(f, rewards, 2), {}, f.path("part"));
  const std::string resumed = run_task(ppo_config(f, rewards, 3), {}, f.path("part"), /*resume=*/true);
  const auto a = policy_weights(whole), b = policy_weights(resumed);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(t.equal(b.at(name))) << name;
  EXPECT_EQ(concord::read_metrics(fs::path(resumed) / "metrics.jsonl").size(), 3u);

  // A reward model that has gone NaN stops the run with a clear error; the last checkpoint
  // still loads.
  auto tensors = concord::io::load_safetensors(fs::path(rewards) / "model.safetensors");
  tensors["score.weight"].fill_(std::numeric_limits<float>::quiet_NaN());
  concord::io::save_safetensors(fs::path(rewards) / "model.safetensors", tensors);
  try {
    run_task(ppo_config(f, rewards, 5), {}, f.path("part"), /*resume=*/true);
    FAIL() << "a NaN reward did not stop the run";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite reward"), std::string::npos) << e.what();
  }
  const auto latest = concord::train::latest_checkpoint(fs::path(f.path("part")) / "checkpoints");
  ASSERT_TRUE(latest.has_value());
  // Iteration 3's (two optimizer steps an iteration), written before the NaN.
  EXPECT_EQ(latest->filename(), "step-00000006");
  auto policy = concord::lm::load_pretrained(f.base);
  concord::rlhf::PolicyWithValue actor(policy);
  const std::vector<concord::train::NamedModule> modules{{"policy", actor.ptr()}};
  concord::train::AdamW optimizer({concord::train::parameter_group(modules)}, {});
  const auto state = concord::train::load_checkpoint(*latest, modules, optimizer);
  EXPECT_EQ(state.data["iteration"], 3);
}

TEST(RlhfTasks, MaxminExperimentWritesPerGroupResults) {
  concord::testing::TempDir tmp;
  const std::string dir = run_task(
      R"({"task": "maxmin_experiment", "seeds": [1, 2],
          "world": {"majority_users": 4, "minority_users": 2, "pairs_per_user": 6},
          "hidden_size": 16, "reference_steps": 5, "single_reward_steps": 5,
          "em": {"max_iterations": 1, "m_step_steps": 3},
          "ppo": {"batch_size": 4, "mini_batch_size": 4, "ppo_epochs": 1},
          "ppo_iterations": 2, "eval_prompts": 4, "eval_samples": 1})",
      {}, (tmp / "mm").string());
  const Json r = concord::load_json_file(fs::path(dir) / "results.json");
  // A figure's summary over the seeds: its mean is the bare number beside it, its per-seed
  // values are the per_seed records' in seed order, and the 95% interval holds the mean and
  // is Student's t with 1 dof at two seeds.
  const auto expect_summary = [](const Json& stats, double mean, const std::vector<double>& values,
                                 const std::string& what) {
    EXPECT_DOUBLE_EQ(stats["mean"].get<double>(), mean) << what;
    EXPECT_EQ(stats["seeds"], Json({1, 2})) << what;
    ASSERT_EQ(stats["per_seed"].size(), stats["seeds"].size()) << what;
    for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(stats["per_seed"][i].get<double>(), values[i]) << what;
    ASSERT_TRUE(stats["ci_low"].is_number()) << what;
    const double sd = std::abs(values[1] - values[0]) / std::sqrt(2.0);
    EXPECT_NEAR(stats["stddev"].get<double>(), sd, 1e-12) << what;
    EXPECT_NEAR(stats["ci_high"].get<double>() - mean, 12.706 * sd / std::sqrt(2.0), 1e-9) << what;
    EXPECT_LE(stats["ci_low"].get<double>(), mean) << what;
    EXPECT_GE(stats["ci_high"].get<double>(), mean) << what;
  };
  EXPECT_TRUE(r["em"]["purity"].is_number());
  EXPECT_TRUE(r["em"]["nmi"].is_number());
  for (const char* metric : {"purity", "nmi"}) {
    expect_summary(r["em"]["stats"][metric], r["em"][metric].get<double>(),
                   {r["em"]["per_seed"][0][metric].get<double>(), r["em"]["per_seed"][1][metric].get<double>()},
                   std::string("em ") + metric);
  }
  for (const char* objective : {"reference", "single", "min", "argmin_group"}) {
    for (const char* group : {"majority", "minority"}) {
      const Json& g = r[objective][group];
      ASSERT_TRUE(g["win_rate"].is_number()) << objective << " " << group;
      ASSERT_TRUE(g["mean_true_reward"].is_number());
      ASSERT_EQ(g["per_seed"].size(), 2u);
      const double mean = (g["per_seed"][0]["win_rate"].get<double>() +
                           g["per_seed"][1]["win_rate"].get<double>()) / 2;
      EXPECT_NEAR(g["win_rate"].get<double>(), mean, 1e-12);
      for (const char* metric : {"win_rate", "mean_true_reward"}) {
        expect_summary(g["stats"][metric], g[metric].get<double>(),
                       {g["per_seed"][0][metric].get<double>(), g["per_seed"][1][metric].get<double>()},
                       std::string(objective) + " " + group + " " + metric);
      }
    }
  }
  // The report gives the intervals and each objective's difference from single per group.
  const std::string report = concord::read_file(fs::path(dir) / "report.md");
  for (const char* line : {"minority win rate: min - single = ", "majority win rate: argmin_group - single = "}) {
    EXPECT_NE(report.find(line), std::string::npos) << line << "\n" << report;
  }
  EXPECT_NE(report.find("(95%, Welch): "), std::string::npos) << report;
  EXPECT_NE(report.find("; paired by seed: "), std::string::npos) << report;
  for (const char* group : {"majority", "minority"}) {
    const double w = r["reference"][group]["win_rate"].get<double>();
    EXPECT_GE(w, 0.0);
    EXPECT_LE(w, 1.0);
  }
  EXPECT_TRUE(fs::exists(fs::path(dir) / "charts" / "minority_win_rate.png"));
}
