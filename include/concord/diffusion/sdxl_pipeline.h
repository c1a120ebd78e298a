// From prompt to picture with Stable Diffusion XL (Podell et al. 2023) or any U-Net of its family
// (the KOALA students, arXiv 2312.04005, or one distilled here), as diffusers'
// StableDiffusionXLPipeline runs it, so that the same initial noise gives the same latents:
//
//   c, pooled         = SdxlTextEncoders(prompt)                   (sdxl_text.h)
//   c_u, pooled_u     = zeros (force_zeros_for_empty_prompt, no negative prompt) or the
//                       encoding of the negative prompt
//   time_ids          = (original H, W, crop top, left, target H, W)        SDXL Sec. 2.2
//   x_T               = noise * init_noise_sigma
//   for each Euler step i (schedulers.h):
//     eps_u, eps_c    = UNet(scale(x_i), t_i, [c_u; c], [pooled_u; pooled], time_ids)
//     eps             = eps_u + g (eps_c - eps_u)                   (Ho & Salimans 2022, Eq. 6)
//     eps             = phi eps (std(eps_c) / std(eps)) + (1 - phi) eps, with phi the guidance
//                       rescale (Lin et al. 2023, "Common Diffusion Noise Schedules", Eq. 15-16)
//     x_{i+1}         = Euler step
//   image             = VAE.decode(x_0 / scaling_factor) / 2 + 1/2, clamped to [0, 1]
//
// Guidance runs when g > 1, in one U-Net call on the doubled batch, as diffusers does.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/diffusion/component_checkpoint.h"
#include "concord/diffusion/schedulers.h"
#include "concord/diffusion/sdxl_text.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/vae.h"

namespace concord::diffusion {

struct SdxlLoadOptions {
  ComponentLoadOptions components;  ///< dtype and device of every component
  /// A U-Net folder to use in place of the pipeline's unet/ (KOALA-1B, -700M, a distilled one).
  std::filesystem::path unet;
};

struct SdxlGenerateOptions {
  int64_t height = 0, width = 0;   ///< pixels; 0: the U-Net's sample_size * vae_scale_factor
  int64_t num_inference_steps = 50;
  double guidance_scale = 5.0;     ///< g; <= 1 runs without guidance
  double guidance_rescale = 0.0;   ///< phi
  /// One for all prompts or one per prompt. Unset: zeros when the pipeline's
  /// force_zeros_for_empty_prompt says so, else the empty prompt.
  std::optional<std::vector<std::string>> negative_prompt;
  int64_t clip_skip = 0;
  int64_t images_per_prompt = 1;
  /// SDXL's micro-conditioning in pixels; original and target 0: (height, width).
  std::array<int64_t, 2> original_size{0, 0}, crop_top_left{0, 0}, target_size{0, 0};
  /// Overrides the scheduler config's spacing when set (leading, trailing, linspace).
  std::string timestep_spacing;
  uint64_t seed = 0;               ///< the initial noise, when none is given
};

/// What one generate() call produced.
struct SdxlGeneration {
  at::Tensor latents;       ///< [N, C, h, w] the final latents (N = prompts x images_per_prompt)
  at::Tensor images;        ///< [N, 3, H, W] fp32 in [0, 1]; undefined when not decoded
  SdxlPromptEmbeds prompt;  ///< per prompt (before images_per_prompt repeats)
  SdxlPromptEmbeds negative;  ///< undefined without guidance
  at::Tensor add_time_ids;  ///< [6] what the U-Net was conditioned on
  at::Tensor timesteps, sigmas;  ///< the schedule that ran
};

class SdxlPipeline {
 public:
  SdxlPipeline(SdxlTextEncoders text, UNet2DCondition unet, AutoencoderKL vae,
               EulerOptions scheduler, bool force_zeros_for_empty_prompt = true);

  /// A diffusers folder: model_index.json (StableDiffusionXLPipeline), unet/, vae/,
  /// text_encoder/ (optional), text_encoder_2/, tokenizer/ (optional), tokenizer_2/, scheduler/.
  static SdxlPipeline load(const std::filesystem::path& folder, const SdxlLoadOptions& options = {});

  /// Swaps the U-Net (after checking it fits the text encoders and the VAE).
  void set_unet(UNet2DCondition unet);

  /// The final latents and, with `decode`, the images of `prompts`. `initial_noise`
  /// [N, C, h, w] (before init_noise_sigma, as diffusers' `latents=` argument), or drawn from
  /// options.seed when undefined. `on_step(i, n)` is called after each step.
  SdxlGeneration generate(const std::vector<std::string>& prompts,
                          const SdxlGenerateOptions& options = {},
                          const at::Tensor& initial_noise = {}, bool decode = true,
                          const std::function<void(int64_t, int64_t)>& on_step = {});

  /// Images [N, 3, H, W] in [0, 1] of latents, as the pipeline's VAE decode and postprocess.
  at::Tensor decode(const at::Tensor& latents);

  /// [N, C, H / f, W / f] standard normal noise from `seed` (CPU generator, so a seed gives the
  /// same noise on every device), in the U-Net's dtype and device.
  at::Tensor initial_noise(int64_t n, int64_t height, int64_t width, uint64_t seed) const;

  /// 2^(len(vae block_out_channels) - 1): pixels per latent.
  int64_t vae_scale_factor() const;
  int64_t default_height() const;  ///< the U-Net's sample_size * vae_scale_factor
  const SdxlTextEncoders& text() const { return text_; }
  UNet2DCondition unet() const { return unet_; }
  AutoencoderKL vae() const { return vae_; }
  const EulerOptions& scheduler() const { return scheduler_; }
  bool force_zeros_for_empty_prompt() const { return force_zeros_; }

 private:
  void check_compatible(const UNet2DCondition& unet) const;
  SdxlTextEncoders text_;
  UNet2DCondition unet_{nullptr};
  AutoencoderKL vae_{nullptr};
  AutoencoderKL vae_fp32_{nullptr};  ///< an fp16 VAE's upcast copy, made on first decode
  EulerOptions scheduler_;
  bool force_zeros_ = true;
};

}  // namespace concord::diffusion
