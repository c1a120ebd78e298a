// The VAE of Stable Diffusion XL: diffusers' AutoencoderKL (vae_config.h describes its layout),
// module for module under diffusers' names, so a diffusers `vae/diffusion_pytorch_model.safetensors`
// maps onto named_parameters() one to one (older checkpoints' `query/key/value/proj_attn`
// attention names are read as `to_q/to_k/to_v/to_out.0`, as diffusers reads them).
//
//   encode:  moments = quant_conv(encoder(x)),  mean, logvar = split(moments),
//            logvar clamped to [-30, 20],  std = exp(logvar / 2),  z = mean + std * eps
//   decode:  x = decoder(post_quant_conv(z))
//
// The diffusion model works on normalised latents (scaling_factor, and latents_mean / latents_std
// or shift_factor when the config sets them): latents_from_image and image_from_latents apply
// that normalisation exactly as diffusers' SDXL training scripts and pipeline do.
//
// The ResNets are the U-Net's ResnetBlock2D without a time embedding; the mid block's one-head
// self-attention over all channels runs on ops::attention, as the U-Net's attention does.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include "concord/diffusion/component_checkpoint.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/vae_config.h"

namespace concord::diffusion {

/// The encoder's posterior q(z | x), diffusers' DiagonalGaussianDistribution, per latent element.
struct DiagonalGaussian {
  at::Tensor mean;    ///< [B, latent_channels, h, w]
  at::Tensor logvar;  ///< clamped to [-30, 20]
  at::Tensor std;     ///< exp(logvar / 2)

  /// mean + std * eps, eps ~ N(0, 1) drawn with `generator` (the default one when unset), in
  /// mean's dtype and on its device.
  at::Tensor sample(c10::optional<at::Generator> generator = c10::nullopt) const;
  /// The mode (the mean), what diffusers' `latent_dist.mode()` returns.
  const at::Tensor& mode() const { return mean; }
  /// KL(q || N(0, I)) summed over each sample's latent: [B]. The KL term of the VAE's loss.
  at::Tensor kl() const;
};

/// diffusers' Attention as UNetMidBlock2D builds it for the VAE: GroupNorm, to_q / to_k / to_v
/// (with bias) over the HW pixels, one head of all channels, to_out.0, + the input.
class VAEAttentionImpl : public torch::nn::Cloneable<VAEAttentionImpl> {
 public:
  VAEAttentionImpl(int64_t channels, int64_t groups, double eps);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  ///< [Linear, Dropout] as diffusers ("to_out.0")

 private:
  int64_t channels_, groups_;
  double eps_;
};
TORCH_MODULE(VAEAttention);

/// UNetMidBlock2D without a time embedding: resnets.0, [attentions.0], resnets.1.
class VAEMidBlockImpl : public torch::nn::Cloneable<VAEMidBlockImpl> {
 public:
  VAEMidBlockImpl(int64_t channels, int64_t groups, bool attention);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};

 private:
  int64_t channels_, groups_;
  bool attention_;
};
TORCH_MODULE(VAEMidBlock);

/// DownEncoderBlock2D (`layers` ResNets, then downsamplers.0.conv: zero-pad right and bottom by
/// one, 3x3 conv with stride 2) or UpDecoderBlock2D (`layers` ResNets, then nearest 2x and
/// upsamplers.0.conv), without a time embedding.
class VAEBlockImpl : public torch::nn::Cloneable<VAEBlockImpl> {
 public:
  enum class Kind { down, up };
  VAEBlockImpl(Kind kind, int64_t in, int64_t out, int64_t layers, int64_t groups, bool resample);
  void reset() override;
  at::Tensor forward(at::Tensor x);
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList downsamplers{nullptr}, upsamplers{nullptr};  ///< [holder with .conv]

 private:
  Kind kind_;
  int64_t in_, out_, layers_, groups_;
  bool resample_;
};
TORCH_MODULE(VAEBlock);

/// diffusers' Encoder: image [B, in_channels, H, W] -> moments [B, 2 * latent_channels, H/f, W/f].
class VAEEncoderImpl : public torch::nn::Cloneable<VAEEncoderImpl> {
 public:
  explicit VAEEncoderImpl(AutoencoderKLConfig config);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::ModuleList down_blocks{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  AutoencoderKLConfig config_;
};
TORCH_MODULE(VAEEncoder);

/// diffusers' Decoder: latents [B, latent_channels, h, w] -> image [B, out_channels, h*f, w*f].
class VAEDecoderImpl : public torch::nn::Cloneable<VAEDecoderImpl> {
 public:
  explicit VAEDecoderImpl(AutoencoderKLConfig config);
  void reset() override;
  at::Tensor forward(const at::Tensor& z);
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  VAEMidBlock mid_block{nullptr};
  torch::nn::ModuleList up_blocks{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};

 private:
  AutoencoderKLConfig config_;
};
TORCH_MODULE(VAEDecoder);

class AutoencoderKLImpl : public torch::nn::Cloneable<AutoencoderKLImpl> {
 public:
  explicit AutoencoderKLImpl(AutoencoderKLConfig config);
  void reset() override;
  /// The posterior of `image` [B, in_channels, H, W] in [-1, 1], H and W multiples of
  /// config.downsampling_factor().
  DiagonalGaussian encode(const at::Tensor& image);
  /// The image [B, out_channels, h * f, w * f] of VAE-space latents z (not normalised: see
  /// image_from_latents).
  at::Tensor decode(const at::Tensor& z);
  /// decode(encode(image).sample(generator)), or decode of the mean when `sample_posterior` is
  /// false (diffusers' AutoencoderKL.forward).
  at::Tensor forward(const at::Tensor& image, bool sample_posterior = false,
                     c10::optional<at::Generator> generator = c10::nullopt);
  int64_t num_parameters() const;

  AutoencoderKLConfig config;
  VAEEncoder encoder{nullptr};
  VAEDecoder decoder{nullptr};
  torch::nn::Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};  ///< null when the config drops them
};
TORCH_MODULE(AutoencoderKL);

/// VAE-space latents -> the diffusion model's latents, as diffusers' SDXL training scripts and
/// img2img pipeline do: (z - latents_mean) * scaling_factor / latents_std when both are set;
/// else (z - shift_factor) * scaling_factor when shift_factor is set (SD3's and Flux's rule;
/// the SDXL pipeline never reads shift_factor); else z * scaling_factor. A config setting both
/// latents_mean/std and shift_factor has no diffusers rule and is an error.
at::Tensor normalize_latents(const AutoencoderKLConfig& config, const at::Tensor& z);
/// The inverse, as pipeline_stable_diffusion_xl.py decodes: latents * latents_std /
/// scaling_factor + latents_mean; latents / scaling_factor + shift_factor; latents / scaling_factor.
at::Tensor denormalize_latents(const AutoencoderKLConfig& config, const at::Tensor& latents);

/// How latents_from_image takes z from the posterior.
enum class PosteriorDraw {
  sample,  ///< mean + std * eps (the training scripts' `latent_dist.sample()`)
  mode,    ///< the mean (`latent_dist.mode()`, deterministic)
};

/// The diffusion model's latents of `image` [B, 3, H, W] in [-1, 1]: encode, draw, normalise.
/// The image is cast to the VAE's dtype and device; the latents come back in them.
at::Tensor latents_from_image(AutoencoderKL vae, const at::Tensor& image,
                              PosteriorDraw draw = PosteriorDraw::sample,
                              c10::optional<at::Generator> generator = c10::nullopt);
/// The image in [-1, 1] (not clamped, as diffusers' decode) of the diffusion model's latents:
/// denormalise, decode. Cast to the VAE's dtype and device.
at::Tensor image_from_latents(AutoencoderKL vae, const at::Tensor& latents);

/// A name of an older diffusers VAE checkpoint read as today's: `<path>.attentions.N.query|key|
/// value|proj_attn.<weight|bias>` -> `to_q|to_k|to_v|to_out.0` (diffusers'
/// _convert_deprecated_attention_blocks); every other name unchanged.
std::string vae_legacy_tensor_name(const std::string& name);

/// Reads a diffusers AutoencoderKL folder (config.json and diffusion_pytorch_model.safetensors,
/// or shards and their index), legacy attention names included; the model comes back in eval
/// mode. Errors name the file and the tensor or key.
AutoencoderKL load_vae(const std::filesystem::path& folder, const ComponentLoadOptions& options = {});

/// Writes config.json and the weights as diffusers' save_pretrained does.
void save_vae(AutoencoderKL model, const std::filesystem::path& folder,
              uint64_t max_shard_bytes = kSavePretrainedMaxShardBytes);

}  // namespace concord::diffusion
