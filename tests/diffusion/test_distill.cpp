// KOALA's distillation objective: a student identical to its teacher has zero output and feature
// terms, training moves the student and never the teacher, a step lowers the loss, and on a GPU
// the objective and its gradients match the CPU's.
#include <gtest/gtest.h>

#include <cmath>

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

TEST(KoalaDistill, CudaMatchesCpu_CUDA) {
  // The whole objective on the device: the frozen teacher, the feature hooks on both U-Nets and
  // the student's gradients. The noise and timesteps come from the CPU generator on both sides.
  CONCORD_REQUIRE_CUDA();
  concord::testing::TempDir tmp;
  const auto data = synthetic(tmp, 4);
  const auto batch = data.get_batch({0, 1, 2, 3});
  const auto student_config = diffusion::load_unet_config(fixture("diffusion") / "tiny-koala");
  auto teacher = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  auto student = diffusion::init_student_from_teacher(teacher, student_config);
  diffusion::UNetLoadOptions on_cuda;
  on_cuda.device = c10::Device(c10::kCUDA);
  auto teacher_cuda = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl", on_cuda);
  diffusion::UNet2DCondition student_cuda(
      std::dynamic_pointer_cast<diffusion::UNet2DConditionImpl>(student->clone()));
  student_cuda->to(torch::kCUDA);
  auto step = [&](diffusion::UNet2DCondition t, diffusion::UNet2DCondition s) {
    diffusion::KoalaDistillation kd(t, s, {});
    s->zero_grad();
    torch::manual_seed(2);
    const auto r = kd.loss(batch);
    r.sum.backward();
    std::vector<double> out;
    for (const char* term : {"loss/task", "loss/output", "loss/feature"}) {
      out.push_back(r.metrics.at(term).value());
    }
    double norm = 0;
    for (const auto& p : s->parameters()) {
      if (p.grad().defined()) norm += p.grad().to(at::kDouble).square().sum().item<double>();
    }
    out.push_back(std::sqrt(norm));
    return out;
  };
  const auto cpu = step(teacher, student), cuda = step(teacher_cuda, student_cuda);
  // cuDNN may run the convolutions in TF32 (LibTorch's default): 1e-3 relative.
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(cuda[i], cpu[i], 1e-3 * (1.0 + std::abs(cpu[i]))) << i;
  EXPECT_GT(cpu[1], 0.0);  // the student differs from its teacher: every term is at work
}
