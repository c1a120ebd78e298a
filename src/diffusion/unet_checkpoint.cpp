#include "concord/diffusion/unet_checkpoint.h"

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/diffusion/component_checkpoint.h"

namespace fs = std::filesystem;

namespace concord::diffusion {

namespace {
constexpr const char* kWhat = "U-Net";
}  // namespace

void load_unet_state_dict(UNet2DCondition model, const std::map<std::string, at::Tensor>& tensors,
                          const std::string& source) {
  // Copied into the model's own tensors, keeping its dtype and device.
  ComponentLoadOptions keep;
  keep.dtype = c10::nullopt;
  keep.device = c10::nullopt;
  load_component_weights(*model, ComponentWeights(tensors, source), keep, kWhat);
}

UNet2DCondition load_unet(const fs::path& folder, const UNetLoadOptions& options) {
  return translate_torch_errors("diffusion::load_unet " + folder.string(), [&] {
    const UNetConfig config = load_unet_config(folder);
    const ComponentWeights weights(folder, kUNetWeightsPrefix);
    UNet2DCondition model(config);
    ComponentLoadOptions lo;
    lo.dtype = options.dtype;
    lo.device = options.device;
    load_component_weights(*model, weights, lo, kWhat);
    model->eval();
    return model;
  });
}

void save_unet(UNet2DCondition model, const fs::path& folder, uint64_t max_shard_bytes) {
  save_component_weights(*model, folder, kUNetWeightsPrefix, max_shard_bytes);
  write_file_atomic(folder / "config.json", unet_config_to_json(model->config).dump(2) + "\n");
}

}  // namespace concord::diffusion
