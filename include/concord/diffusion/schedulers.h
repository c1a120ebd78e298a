// Noise schedules of latent diffusion as SDXL uses them, with diffusers' conventions so that a
// value here equals the one diffusers computes (tests/diffusion, fixtures from diffusers):
//
//   DDPM training schedule (Ho et al. 2020): betas "scaled_linear" =
//     linspace(sqrt(beta_start), sqrt(beta_end), T)^2,   alpha_bar_t = prod_{s<=t} (1 - beta_s)
//     x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps                      (add_noise)
//     v_t = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0                      (velocity;
//                                                        Salimans & Ho 2022, v-prediction)
//   Euler discrete sampling (Karras et al. 2022, Alg. 1 without churn) on
//     sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), timesteps spaced "leading" (SDXL's
//     scheduler: t_i = i * floor(T / n) + offset, descending) or "trailing" (t_i = round(T - i T / n) - 1),
//     x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - x0_hat) / sigma_i, with x0_hat from the
//     model's epsilon or v prediction at the input x_i / sqrt(sigma_i^2 + 1).
//   Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + g (eps_c - eps_u).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/core/config.h"

namespace concord::diffusion {

struct DdpmOptions {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.00085;
  double beta_end = 0.012;
  std::string beta_schedule = "scaled_linear";  ///< scaled_linear | linear
  std::string prediction_type = "epsilon";      ///< epsilon | v_prediction
};

/// The training schedule: what the distillation and the tests noise latents with.
class DdpmSchedule {
 public:
  explicit DdpmSchedule(DdpmOptions options = {});
  const DdpmOptions& options() const { return options_; }
  const at::Tensor& betas() const { return betas_; }             ///< [T] fp64
  const at::Tensor& alphas_cumprod() const { return alphas_cumprod_; }  ///< [T] fp64
  /// x_t for x0 [B, ...], noise like x0 and t [B] int64.
  at::Tensor add_noise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  /// v_t (the v-prediction target).
  at::Tensor velocity(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;
  /// What the model learns to predict at (x0, noise, t): noise, or v.
  at::Tensor target(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const;

 private:
  // sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) for t [B], shaped to broadcast against x.
  std::pair<at::Tensor, at::Tensor> coefficients(const at::Tensor& t, const at::Tensor& like) const;
  DdpmOptions options_;
  at::Tensor betas_, alphas_cumprod_;
};

struct EulerOptions {
  DdpmOptions training;                         ///< betas and prediction type
  std::string timestep_spacing = "leading";     ///< leading | trailing | linspace
  int64_t steps_offset = 1;                     ///< SDXL's scheduler config
};

/// A diffusers scheduler_config.json of an EulerDiscreteScheduler (what SDXL ships): betas,
/// prediction type, spacing and offset. Options Concord does not implement (Karras or
/// exponential sigmas, zero-SNR rescaling, trained betas, another scheduler class) are errors
/// naming the key.
EulerOptions euler_options_from_json(const Json& json, const std::string& source);
/// A scheduler folder's scheduler_config.json, or the file itself.
EulerOptions load_euler_options(const std::filesystem::path& path);

/// Euler discrete sampling over `num_inference_steps` steps.
class EulerSampler {
 public:
  EulerSampler(EulerOptions options, int64_t num_inference_steps);
  const at::Tensor& timesteps() const { return timesteps_; }  ///< [n] fp32, descending
  const at::Tensor& sigmas() const { return sigmas_; }        ///< [n + 1] fp32, ending in 0
  /// The scale of the initial noise: sqrt(max sigma^2 + 1) (leading), max sigma (the others).
  double init_noise_sigma() const;
  /// The model's input at step i: sample / sqrt(sigma_i^2 + 1).
  at::Tensor scale_model_input(const at::Tensor& sample, int64_t i) const;
  /// The sample after step i given the model's output there.
  at::Tensor step(const at::Tensor& model_output, int64_t i, const at::Tensor& sample) const;

  /// A whole sampling loop: `predict(model_input, timestep)` returns the model's output (apply
  /// classifier-free guidance inside it, guided()); starts from `noise` * init_noise_sigma.
  at::Tensor sample(const at::Tensor& noise,
                    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& predict) const;

 private:
  EulerOptions options_;
  at::Tensor timesteps_, sigmas_;
};

/// Classifier-free guidance: uncond + scale (cond - uncond).
at::Tensor guided(const at::Tensor& uncond, const at::Tensor& cond, double scale);

}  // namespace concord::diffusion
