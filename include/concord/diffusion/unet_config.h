// The architecture of a conditional U-Net as diffusers' UNet2DConditionModel describes it in its
// config.json, for the members Stable Diffusion XL and the KOALA students use (KOALA, arXiv
// 2312.04005, its architecture tables): blocks of ResNet layers and transformer layers over three
// resolutions, SDXL's "text_time" added conditioning, linear projections into the transformers.
//
//   down blocks  DownBlock2D | CrossAttnDownBlock2D, each `layers_per_block[i]` ResNets (with a
//                Transformer2DModel of depth `transformer_layers_per_block[i]` after each one
//                in a cross-attention block), then a stride-2 conv except in the last block
//   mid block    UNetMidBlock2DCrossAttn (ResNet, transformer, ResNet) or none (KOALA-700M)
//   up blocks    the mirror: `layers_per_block[i] + 1` ResNets each, every one reading one skip
//                connection, then nearest 2x upsampling and a conv except in the last block
//
// Keys Concord does not implement (another attention type, class embeddings, a time
// conditioning other than text_time, ...) are errors naming the key, never silently ignored.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "concord/core/config.h"

namespace concord::diffusion {

struct UNetConfig {
  int64_t in_channels = 4;
  int64_t out_channels = 4;
  int64_t sample_size = 128;
  std::vector<std::string> down_block_types;  ///< DownBlock2D | CrossAttnDownBlock2D
  std::vector<std::string> up_block_types;    ///< UpBlock2D | CrossAttnUpBlock2D
  std::string mid_block_type = "UNetMidBlock2DCrossAttn";  ///< or "" for none
  std::vector<int64_t> block_out_channels;
  std::vector<int64_t> layers_per_block;      ///< per down block (up blocks: + 1)
  std::vector<int64_t> transformer_layers_per_block;          ///< per down block; mid: the last
  std::vector<int64_t> reverse_transformer_layers_per_block;  ///< per up block (default: reversed)
  std::vector<int64_t> num_attention_heads;   ///< per block (diffusers' attention_head_dim, for SDXL)
  int64_t cross_attention_dim = 2048;
  int64_t norm_num_groups = 32;
  double norm_eps = 1e-5;
  bool flip_sin_to_cos = true;
  int64_t freq_shift = 0;
  bool use_linear_projection = true;
  /// "text_time" (SDXL) or "" (none).
  std::string addition_embed_type = "text_time";
  int64_t addition_time_embed_dim = 256;
  int64_t projection_class_embeddings_input_dim = 2816;
  int64_t time_embed_dim() const { return block_out_channels.at(0) * 4; }

  void validate(const std::string& source = "unet config") const;
};

/// Reads diffusers' config.json of a UNet2DConditionModel (`source` names it in errors).
UNetConfig unet_config_from_json(const Json& json, const std::string& source);
/// A config file, or a model folder's config.json.
UNetConfig load_unet_config(const std::filesystem::path& path);
/// The config.json diffusers writes for this model.
Json unet_config_to_json(const UNetConfig& config);

/// Exact parameter count of UNet2DConditionModel(config), by the same rules that build it.
int64_t count_unet_parameters(const UNetConfig& config);
/// The same count by top-level module (conv_in, time_embedding, add_embedding, down_blocks.i,
/// mid_block, up_blocks.i, conv_out), in that order; sums to count_unet_parameters().
std::vector<std::pair<std::string, int64_t>> count_unet_parameters_by_block(const UNetConfig& config);

/// True when `path` (a file, or a folder's config.json) is a diffusers UNet2DConditionModel config.
bool is_unet_config(const std::filesystem::path& path);

}  // namespace concord::diffusion
