// KOALA's knowledge distillation (arXiv 2312.04005, its knowledge-distillation section; after BK-SDM): a student U-Net
// learns from a frozen teacher on noised latents x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 -
// alpha_bar_t) eps, t ~ U{0, T-1}, with three terms
//
//   L = l_task ||eps - eps_S(x_t, t, c)||^2                   (the ordinary denoising loss)
//     + l_out  ||eps_T(x_t, t, c) - eps_S(x_t, t, c)||^2      (output distillation)
//     + l_feat sum_l ||f_T^l - f_S^l||^2                      (feature distillation)
//
// each squared norm a mean over elements, the features f^l chosen by a feature map of
// student.h (self_attention: KOALA's). The teacher runs under NoGradGuard and its features are
// captured detached (nn::FeatureCapture); the student's keep their graph. With v-prediction the
// task target is v instead of eps.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/core/options.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/schedulers.h"
#include "concord/diffusion/student.h"
#include "concord/diffusion/unet.h"
#include "concord/train/objective.h"

namespace concord::diffusion {

struct DistillOptions {
  double task_weight = 1.0;     ///< l_task
  double output_weight = 1.0;   ///< l_out
  double feature_weight = 1.0;  ///< l_feat
  std::string feature_map = "self_attention";
};

const OptionsSchema<DistillOptions>& distill_options_schema();

class KoalaDistillation final : public train::Objective<LatentBatch> {
 public:
  /// The mapping comes from options.feature_map over the two configs; every path is checked
  /// against both models here, before any step.
  KoalaDistillation(UNet2DCondition teacher, UNet2DCondition student, DistillOptions options,
                    DdpmOptions schedule = {});
  int64_t count(const LatentBatch& batch) const override { return batch.latents.size(0); }
  /// Metrics: "loss/task", "loss/output", "loss/feature" (each a mean per latent).
  train::LossSum loss(const LatentBatch& batch) override;
  std::string unit() const override { return "latents"; }

  const std::vector<FeaturePair>& pairs() const { return pairs_; }
  const DdpmSchedule& schedule() const { return schedule_; }

 private:
  UNet2DCondition teacher_, student_;
  DistillOptions options_;
  DdpmSchedule schedule_;
  std::vector<FeaturePair> pairs_;
};

/// The U-Net's inputs for a batch of latents at timesteps t (noised outside).
UNetInputs unet_inputs(const LatentBatch& batch, const at::Tensor& sample, const at::Tensor& t);

/// The ordinary denoising loss of a U-Net (how a teacher is trained, and the task term):
/// mean over elements of (target - prediction)^2 at random t and noise. count = latents.
class DenoisingObjective final : public train::Objective<LatentBatch> {
 public:
  DenoisingObjective(UNet2DCondition model, DdpmOptions schedule = {});
  int64_t count(const LatentBatch& batch) const override { return batch.latents.size(0); }
  train::LossSum loss(const LatentBatch& batch) override;
  std::string unit() const override { return "latents"; }

 private:
  UNet2DCondition model_;
  DdpmSchedule schedule_;
};

}  // namespace concord::diffusion
