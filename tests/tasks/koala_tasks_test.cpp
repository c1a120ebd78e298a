// The KOALA tasks through run_task: koala_kd from a diffusers teacher folder and a student config
// (synthetic latents, EMA, bit-exact resume), bad shards refused before any step, and the
// koala_experiment's results.json.
#include <gtest/gtest.h>

#include <filesystem>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/io/safetensors.h"
#include "concord/tasks/tasks.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::Json;
using concord::tasks::run_task;

namespace {

std::string kd_config(int steps) {
  const auto dir = concord::testing::fixture("diffusion");
  return R"({"task": "koala_kd", "teacher": ")" + (dir / "tiny-sdxl").string() + R"(",
    "student": ")" + (dir / "tiny-koala" / "config.json").string() + R"(",
    "data": "synthetic", "synthetic_samples": 12, "batch_size": 4, "ema_decay": 0.9,
    "train": {"max_steps": )" + std::to_string(steps) + R"(, "checkpoint_every": 1, "lr": 1e-3,
              "progress": false}})";
}

}  // namespace

TEST(KoalaTasks, DistillsFromATeacherFolderAndResumesBitExact) {
  concord::testing::TempDir tmp;
  const std::string whole = run_task(kd_config(4), {}, (tmp / "whole").string());
  const auto metrics = concord::read_metrics(fs::path(whole) / "metrics.jsonl");
  ASSERT_FALSE(metrics.empty());
  bool terms = false;
  for (const auto& m : metrics) terms = terms || (m.contains("train/loss/task") && m.contains("train/loss/feature"));
  EXPECT_TRUE(terms);
  for (const char* f : {"student/config.json", "student/diffusion_pytorch_model.safetensors",
                        "student_ema/diffusion_pytorch_model.safetensors", "charts/loss_terms.png"}) {
    EXPECT_TRUE(fs::exists(fs::path(whole) / f)) << f;
  }
  const std::string report = concord::read_file(fs::path(whole) / "report.md");
  EXPECT_NE(report.find("transformer_blocks.0.attn1"), std::string::npos) << report;
  EXPECT_NE(report.find("`up_blocks.0.resnets.1` | `up_blocks.0.resnets.2`"), std::string::npos);

  // A bf16 teacher: the student stays fp32 and trains.
  const std::string bf16 = run_task(kd_config(1), {"teacher_dtype=bfloat16"}, (tmp / "bf16").string());
  const auto sb = concord::io::load_safetensors(fs::path(bf16) / "student/diffusion_pytorch_model.safetensors");
  EXPECT_EQ(sb.at("conv_in.weight").scalar_type(), at::kFloat);

  run_task(kd_config(2), {}, (tmp / "part").string());
  const std::string resumed = run_task(kd_config(4), {}, (tmp / "part").string(), /*resume=*/true);
  const auto a = concord::io::load_safetensors(fs::path(whole) / "student/diffusion_pytorch_model.safetensors");
  const auto b = concord::io::load_safetensors(fs::path(resumed) / "student/diffusion_pytorch_model.safetensors");
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(t.equal(b.at(name))) << name;
}

TEST(KoalaTasks, BadShardsAndStudentsFailBeforeAnyStep) {
  concord::testing::TempDir tmp;
  fs::create_directories(tmp / "shards");
  concord::io::save_safetensors(tmp / "shards" / "a.safetensors",
                                {{"latents", at::zeros({2, 3, 16, 16})},
                                 {"encoder_hidden_states", at::zeros({2, 7, 32})},
                                 {"text_embeds", at::zeros({2, 16})},
                                 {"time_ids", at::zeros({2, 6})}});
  try {
    run_task(kd_config(2), {"data=" + (tmp / "shards").string()}, (tmp / "r").string());
    FAIL() << "latents with 3 channels were accepted for a 4-channel U-Net";
  } catch (const concord::Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("a.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find("latents"), std::string::npos) << m;
  }
  // No step ran: no metrics record, no checkpoint.
  EXPECT_TRUE(!fs::exists(tmp / "r" / "metrics.jsonl") ||
              concord::read_metrics(tmp / "r" / "metrics.jsonl").empty());
  EXPECT_FALSE(fs::exists(tmp / "r" / "checkpoints"));
  // An unknown feature map, before any weight is read.
  try {
    run_task(kd_config(2), {"distill.feature_map=attention_maps"}, (tmp / "r3").string());
    FAIL() << "an unknown feature map was accepted";
  } catch (const concord::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("attention_maps"), std::string::npos) << e.what();
  }
  // A student deeper than its teacher.
  Json student = concord::load_json_file(concord::testing::fixture("diffusion") / "tiny-koala" / "config.json");
  student["transformer_layers_per_block"] = {1, 1, 5};
  const auto path = concord::testing::write_file(tmp / "deep.json", student.dump());
  try {
    run_task(kd_config(2), {"student=" + path.string()}, (tmp / "r2").string());
    FAIL() << "a deeper student was accepted";
  } catch (const concord::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("deep.json"), std::string::npos) << e.what();
  }
  // A student without the bottom level's transformers: a cut of its teacher, but without the
  // module the self-attention map reads there.
  student["transformer_layers_per_block"] = {1, 1, 0};
  student["reverse_transformer_layers_per_block"] = {0, 1, 1};
  const auto flat = concord::testing::write_file(tmp / "flat.json", student.dump());
  try {
    run_task(kd_config(2), {"student=" + flat.string()}, (tmp / "r4").string());
    FAIL() << "a student without the module the feature map reads was accepted";
  } catch (const concord::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("flat.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("transformer_blocks.0.attn1"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp / "r4" / "checkpoints"));
}

TEST(KoalaTasks, ExperimentWritesPerFeatureMapResults) {
  concord::testing::TempDir tmp;
  const std::string dir = run_task(
      R"({"task": "koala_experiment", "seeds": [1, 2], "train_samples": 16, "heldout_samples": 8,
          "latent_size": 8, "teacher_steps": 2, "distill_steps": 2, "batch_size": 8,
          "feature_maps": ["output_only", "self_attention"]})",
      {}, (tmp / "k").string());
  const Json r = concord::load_json_file(fs::path(dir) / "results.json");
  // Each figure is summarised over the seeds: the values in seed order, their mean, the sample
  // sd and a 95% Student-t interval (1 dof at two seeds) around the mean.
  const auto expect_summary = [](const Json& s, const std::string& what) {
    ASSERT_TRUE(s["mean"].is_number()) << what;
    EXPECT_EQ(s["seeds"], Json({1, 2})) << what;
    ASSERT_EQ(s["per_seed"].size(), 2u) << what;
    const double a = s["per_seed"][0].get<double>(), b = s["per_seed"][1].get<double>();
    const double mean = s["mean"].get<double>();
    EXPECT_DOUBLE_EQ(mean, (a + b) / 2) << what;
    EXPECT_NEAR(s["stddev"].get<double>(), std::abs(a - b) / std::sqrt(2.0), 1e-12) << what;
    ASSERT_TRUE(s["ci_low"].is_number() && s["ci_high"].is_number()) << what;
    EXPECT_NEAR(s["ci_high"].get<double>() - mean, 12.706 * std::abs(a - b) / 2, 1e-9) << what;
    EXPECT_NEAR(mean - s["ci_low"].get<double>(), 12.706 * std::abs(a - b) / 2, 1e-9) << what;
  };
  for (const char* map : {"output_only", "self_attention"}) {
    for (const char* metric : {"output_mse", "denoise_loss"}) expect_summary(r[map][metric], std::string(map) + " " + metric);
  }
  expect_summary(r["teacher"]["denoise_loss"], "teacher denoise_loss");
  // Different seeds: different data and teachers, so different figures.
  EXPECT_NE(r["teacher"]["denoise_loss"]["per_seed"][0], r["teacher"]["denoise_loss"]["per_seed"][1]);
  EXPECT_TRUE(fs::exists(fs::path(dir) / "charts" / "output_mse.png"));
  // The report compares every other map with self_attention, by Welch and paired by seed.
  const std::string report = concord::read_file(fs::path(dir) / "report.md");
  EXPECT_NE(report.find("output MSE: output_only - self_attention = "), std::string::npos) << report;
  EXPECT_NE(report.find("(95%, Welch): "), std::string::npos) << report;
  EXPECT_NE(report.find("; paired by seed: "), std::string::npos) << report;
}
