// KOALA's claim in miniature (arXiv 2312.04005, its feature-distillation ablation): at the same
// step budget, which feature map makes the best student? Offline and reproducible on a CPU:
//
//   1. synthetic conditional latents (latent_data.h): a training and a held-out set;
//   2. a small SDXL-shaped teacher (two ResNets per block, transformer depths [-, 1, 2], a mid
//      block, text_time conditioning) trained by the denoising loss;
//   3. a KOALA-style student (one ResNet per down block, depth-1 transformers, no mid block) cut
//      from it (student.h), then distilled (distill.h) once per feature map, same seed, same
//      steps, same data order; "output_only" (no feature term) is the baseline;
//   4. on the held-out set with fixed noise and timesteps: output_mse = mean ||eps_T - eps_S||^2
//      (how well the student imitates the teacher) and denoise_loss = mean ||eps - eps_S||^2.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_config.h"

namespace concord::diffusion {

struct KoalaExperimentOptions {
  std::vector<int64_t> seeds{1, 2, 3};
  int64_t train_samples = 256;
  int64_t heldout_samples = 64;
  int64_t latent_size = 8;            ///< H = W of the latents
  int64_t classes = 8;
  std::vector<int64_t> block_out_channels{16, 32, 32};
  int64_t teacher_steps = 200;
  int64_t distill_steps = 100;
  int64_t batch_size = 16;
  double lr = 1e-3;
  std::vector<std::string> feature_maps{"output_only", "self_attention", "cross_attention",
                                        "feed_forward", "resnet", "last_feature"};
  double feature_weight = 1.0;
};

const OptionsSchema<KoalaExperimentOptions>& koala_experiment_options_schema();

/// The teacher's and the student's configs for these options.
UNetConfig koala_experiment_teacher_config(const KoalaExperimentOptions& o);
UNetConfig koala_experiment_student_config(const KoalaExperimentOptions& o);

struct KoalaCallbacks {
  std::function<void(int64_t seed, const std::string& stage, const std::string& detail)> progress;
  /// Per-step metrics (with "seed" and "feature_map"), for the caller's metrics file.
  std::function<void(const nlohmann::json& record)> metrics;
  /// Each student once evaluated, with its teacher (eval mode): for a caller that samples them.
  std::function<void(int64_t seed, const std::string& feature_map, UNet2DCondition teacher,
                     UNet2DCondition student)>
      trained;
};

/// Runs the study in `work_dir` (the synthetic shards go there); returns results.json's object:
///   teacher: {denoise_loss: S}
///   <feature map>: {output_mse: S, denoise_loss: S}
///   config: the options
/// where each S is SeedSummary::to_json() (core/statistics.h): {mean, stddev, ci_low, ci_high,
/// seeds, per_seed: [values in the order of seeds]}, the interval Student's t 95% (null with
/// one seed).
nlohmann::json run_koala_experiment(const KoalaExperimentOptions& options,
                                    const std::filesystem::path& work_dir,
                                    const KoalaCallbacks& callbacks = {});

}  // namespace concord::diffusion
