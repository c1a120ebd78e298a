// KOALA's distillation objective: a student identical to its teacher has zero output and feature
// terms, training moves the student and never the teacher, and a step lowers the loss.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/diffusion/distill.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/train/batch.h"
#include "concord/train/trainer.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;

namespace {

diffusion::LatentShards synthetic(const concord::testing::TempDir& tmp, int64_t samples = 16) {
  diffusion::SyntheticLatentOptions so;
  so.samples = samples;
  so.samples_per_shard = samples;
  so.text_length = 7;
  so.height = so.width = 16;
  return diffusion::LatentShards(diffusion::write_synthetic_latents(tmp / "data", so));
}

}  // namespace

TEST(KoalaDistill, AStudentEqualToItsTeacherHasNothingToLearnFromIt) {
  concord::testing::TempDir tmp;
  const auto data = synthetic(tmp);
  auto teacher = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  auto student = diffusion::init_student_from_teacher(teacher, teacher->config);
  diffusion::KoalaDistillation kd(teacher, student, {});
  torch::manual_seed(0);
  const auto r = kd.loss(data.get_batch({0, 1, 2, 3}));
  EXPECT_NEAR(r.metrics.at("loss/output").value(), 0.0, 1e-10);
  EXPECT_NEAR(r.metrics.at("loss/feature").value(), 0.0, 1e-10);
  EXPECT_GT(r.metrics.at("loss/task").value(), 0.01);
  EXPECT_EQ(kd.pairs().size(), 7u);  // 3 down, mid, 3 up
}

TEST(KoalaDistill, TrainingMovesTheStudentOnlyAndLowersTheLoss) {
  concord::testing::TempDir tmp;
  const auto data = synthetic(tmp, 32);
  auto teacher = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  auto student = diffusion::init_student_from_teacher(
      teacher, diffusion::load_unet_config(fixture("diffusion") / "tiny-koala"));
  std::map<std::string, at::Tensor> before;
  for (const auto& p : teacher->named_parameters()) before[p.key()] = p.value().clone();
  diffusion::KoalaDistillation kd(teacher, student, {});
  train::TrainerOptions t;
  t.max_steps = 25;
  t.optimizer.lr = 1e-3;
  t.optimizer.weight_decay = 0;
  t.lr_schedule = "constant";
  t.progress = false;
  train::Trainer trainer({{"student", student.ptr()}}, t);
  data::SamplerOptions so;
  so.batch_size = 32;
  so.shuffle = false;
  train::SampledBatches<diffusion::LatentShards, diffusion::LatentBatch> batches(data, so);
  torch::manual_seed(1);
  const auto first = trainer.evaluate(kd, batches, 1);
  trainer.fit(kd, batches);
  torch::manual_seed(1);
  const auto last = trainer.evaluate(kd, batches, 1);
  EXPECT_LT(last.metrics.at("loss/output").value(), first.metrics.at("loss/output").value());
  EXPECT_LT(last.metrics.at("loss/feature").value(), first.metrics.at("loss/feature").value());
  for (const auto& p : teacher->named_parameters()) EXPECT_TRUE(p.value().equal(before[p.key()])) << p.key();
}
