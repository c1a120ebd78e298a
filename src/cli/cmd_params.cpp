// `concord params MODEL_CONFIG [--by-module]`: the exact parameter count of a model, from a
// Concord model config, a Hugging Face config.json, or a diffusers UNet2DConditionModel or
// AutoencoderKL config.json (or a folder holding one), without building the model.
#include <cstdio>
#include <string>

#include "commands.h"
#include "concord/diffusion/clip_text_encoder.h"
#include "concord/diffusion/unet_config.h"
#include "concord/diffusion/vae_config.h"
#include "concord/lm/model_config.h"

namespace concord::cli {

int cmd_params(const ParamsArgs& args) {
  if (diffusion::is_unet_config(args.model_config)) {
    const auto unet = diffusion::load_unet_config(args.model_config);
    if (args.by_module) {
      for (const auto& [name, count] : diffusion::count_unet_parameters_by_block(unet)) {
        std::printf("%-20s %lld\n", name.c_str(), static_cast<long long>(count));
      }
    }
    std::printf("parameters: %lld\n", static_cast<long long>(diffusion::count_unet_parameters(unet)));
    return 0;
  }
  if (diffusion::is_clip_text_config(args.model_config)) {
    const auto clip = diffusion::load_clip_text_config(args.model_config);
    std::printf("parameters: %lld\n", static_cast<long long>(diffusion::count_clip_text_parameters(clip)));
    return 0;
  }
  if (diffusion::is_vae_config(args.model_config)) {
    const auto vae = diffusion::load_vae_config(args.model_config);
    if (args.by_module) {
      for (const auto& [name, count] : diffusion::count_vae_parameters_by_block(vae)) {
        std::printf("%-24s %lld\n", name.c_str(), static_cast<long long>(count));
      }
    }
    std::printf("parameters: %lld\n", static_cast<long long>(diffusion::count_vae_parameters(vae)));
    return 0;
  }
  const lm::ModelConfig config = lm::load_any_model_config(args.model_config);
  if (args.by_module) {
    for (const auto& [name, count] : lm::count_parameters_by_module(config)) {
      std::printf("%-20s %lld\n", name.c_str(), static_cast<long long>(count));
    }
  }
  std::printf("parameters: %lld\n", static_cast<long long>(lm::count_parameters(config)));
  return 0;
}

}  // namespace concord::cli
