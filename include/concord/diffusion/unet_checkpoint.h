// diffusers checkpoints of a UNet2DConditionModel: a folder with config.json and
// diffusion_pytorch_model.safetensors, or shards behind diffusion_pytorch_model.safetensors.index.json,
// under diffusers' tensor names. Concord's modules carry those names (unet.h), so the mapping is
// the identity; the checking (every tensor the config needs is present with its shape, and
// nothing else is there, each error naming the file and the tensor, before any weight is copied)
// is component_checkpoint.h's, shared with the VAE and the text encoders.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include <ATen/ATen.h>

#include "concord/diffusion/component_checkpoint.h"
#include "concord/diffusion/unet.h"

namespace concord::diffusion {

inline constexpr const char* kUNetWeightsPrefix = kDiffusersWeightsPrefix;

struct UNetLoadOptions {
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
};

/// Copies diffusers-named tensors into `model`; `source` names them in errors.
void load_unet_state_dict(UNet2DCondition model, const std::map<std::string, at::Tensor>& tensors,
                          const std::string& source);

/// Reads a diffusers U-Net folder; the model comes back in eval mode.
UNet2DCondition load_unet(const std::filesystem::path& folder, const UNetLoadOptions& options = {});

/// Writes config.json and the weights as diffusers' save_pretrained does (shards of at most
/// `max_shard_bytes` and an index when they do not fit one file).
void save_unet(UNet2DCondition model, const std::filesystem::path& folder,
               uint64_t max_shard_bytes = uint64_t{10} << 30);

}  // namespace concord::diffusion
