// The architecture of diffusers' AutoencoderKL as its config.json describes it, for the members
// Stable Diffusion XL's VAE uses (the KL-regularised perceptual compression model of Latent
// Diffusion, Rombach et al. 2022, arXiv 2112.10752): an image x in [-1, 1] is encoded to a
// diagonal Gaussian over latents z, 2^(n-1) times smaller along each side, and z is decoded back
// to an image.
//
//   encoder      conv_in, n DownEncoderBlock2D (`layers_per_block` ResNets, then a stride-2 conv
//                except in the last block), UNetMidBlock2D (ResNet, one-head self-attention,
//                ResNet), GroupNorm, SiLU, conv_out to 2 * latent_channels (mean, log-variance)
//   quant_conv   1x1 conv on the moments (use_quant_conv)
//   decoder      post_quant_conv (1x1, use_post_quant_conv), conv_in, UNetMidBlock2D, n
//                UpDecoderBlock2D (`layers_per_block + 1` ResNets, then nearest 2x and a conv
//                except in the last block), GroupNorm, SiLU, conv_out
//
// The diffusion model sees latents normalised by scaling_factor (LDM's sections 4.3.2 and D.1,
// as diffusers' docstring cites them)
// and, when the config sets them, by latents_mean / latents_std or shift_factor (vae.h's
// latents_from_image / image_from_latents). Values Concord does not implement (another block
// type or activation) are errors naming the key, never silently ignored.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "concord/core/config.h"

namespace concord::diffusion {

/// diffusers' AutoencoderKL config; the defaults are its __init__'s.
struct AutoencoderKLConfig {
  int64_t in_channels = 3;
  int64_t out_channels = 3;
  std::vector<std::string> down_block_types{"DownEncoderBlock2D"};  ///< DownEncoderBlock2D only
  std::vector<std::string> up_block_types{"UpDecoderBlock2D"};      ///< UpDecoderBlock2D only
  std::vector<int64_t> block_out_channels{64};
  int64_t layers_per_block = 1;  ///< per encoder block; decoder blocks have one more
  std::string act_fn = "silu";   ///< silu only
  int64_t latent_channels = 4;
  int64_t norm_num_groups = 32;
  int64_t sample_size = 32;
  double scaling_factor = 0.18215;
  std::optional<double> shift_factor;               ///< null in SD / SDXL
  std::optional<std::vector<double>> latents_mean;  ///< per latent channel, or null
  std::optional<std::vector<double>> latents_std;   ///< per latent channel, or null
  /// The SDXL pipeline runs such a VAE in fp32 whatever the pipeline's dtype (load it so).
  bool force_upcast = true;
  bool use_quant_conv = true;
  bool use_post_quant_conv = true;
  bool mid_block_add_attention = true;

  /// Latent pixels per image pixel along each side: 2^(blocks - 1) (8 for SDXL).
  int64_t downsampling_factor() const { return int64_t{1} << (block_out_channels.size() - 1); }
  void validate(const std::string& source = "vae config") const;
};

/// Reads diffusers' config.json of an AutoencoderKL (`source` names it in errors).
AutoencoderKLConfig vae_config_from_json(const Json& json, const std::string& source);
/// A config file, or a model folder's config.json.
AutoencoderKLConfig load_vae_config(const std::filesystem::path& path);
/// The config.json diffusers writes for this model.
Json vae_config_to_json(const AutoencoderKLConfig& config);

/// Exact parameter count of AutoencoderKL(config), by the same rules that build it.
int64_t count_vae_parameters(const AutoencoderKLConfig& config);
/// The same count by module (encoder.conv_in, encoder.down_blocks.i, encoder.mid_block,
/// encoder.conv_out with its norm, quant_conv, post_quant_conv, decoder.conv_in,
/// decoder.mid_block, decoder.up_blocks.i, decoder.conv_out with its norm), in that order; sums
/// to count_vae_parameters().
std::vector<std::pair<std::string, int64_t>> count_vae_parameters_by_block(
    const AutoencoderKLConfig& config);

/// True when `path` (a file, or a folder's config.json) is a diffusers AutoencoderKL config.
bool is_vae_config(const std::filesystem::path& path);

}  // namespace concord::diffusion
