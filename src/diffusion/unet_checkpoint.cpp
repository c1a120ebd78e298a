#include "concord/diffusion/unet_checkpoint.h"

#include <memory>
#include <set>
#include <sstream>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/safetensors.h"
#include "concord/io/safetensors_sharded.h"

namespace fs = std::filesystem;

namespace concord::diffusion {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream out;
  out << s;
  return out.str();
}

// Every parameter and buffer of the model must come from the checkpoint, and nothing else may be
// in it. `shape_of` and `contains` look into the checkpoint.
template <typename Contains, typename ShapeOf>
void check_names(UNet2DCondition& model, const std::vector<std::string>& names, Contains contains,
                 ShapeOf shape_of, const std::string& where) {
  std::set<std::string> wanted;
  for (const auto& p : model->named_parameters()) {
    wanted.insert(p.key());
    if (!contains(p.key())) {
      fail_format(where, "tensor '", p.key(), "' is missing (the config's U-Net has it)");
    }
    const std::vector<int64_t> got = shape_of(p.key());
    if (got != p.value().sizes().vec()) {
      fail_format(where, "tensor '", p.key(), "' has shape ", shape_str(got), ", expected ",
                  shape_str(p.value().sizes()));
    }
  }
  for (const auto& name : names) {
    if (!wanted.count(name)) {
      fail_format(where, "unexpected tensor '", name, "' (not part of a U-Net with this config)");
    }
  }
}

}  // namespace

void load_unet_state_dict(UNet2DCondition model, const std::map<std::string, at::Tensor>& tensors,
                          const std::string& source) {
  std::vector<std::string> names;
  for (const auto& [name, t] : tensors) names.push_back(name);
  check_names(
      model, names, [&](const std::string& n) { return tensors.count(n) > 0; },
      [&](const std::string& n) { return tensors.at(n).sizes().vec(); }, source);
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters()) p.value().copy_(tensors.at(p.key()));
}

UNet2DCondition load_unet(const fs::path& folder, const UNetLoadOptions& options) {
  return translate_torch_errors("diffusion::load_unet " + folder.string(), [&] {
    const UNetConfig config = load_unet_config(folder);
    fs::path index = folder / (std::string(kUNetWeightsPrefix) + ".safetensors.index.json");
    fs::path single = folder / (std::string(kUNetWeightsPrefix) + ".safetensors");
    std::unique_ptr<io::ShardedSafetensors> sharded;
    std::unique_ptr<io::SafetensorsFile> file;
    if (fs::exists(index)) {
      sharded = std::make_unique<io::ShardedSafetensors>(index);
    } else if (fs::exists(single)) {
      file = std::make_unique<io::SafetensorsFile>(single);
    } else {
      fail_io(folder.string(), "no ", kUNetWeightsPrefix, ".safetensors or its index");
    }
    const std::string where = (sharded ? index : single).string();
    UNet2DCondition model(config);
    auto contains = [&](const std::string& n) { return sharded ? sharded->contains(n) : file->contains(n); };
    auto info = [&](const std::string& n) -> const io::SafetensorsTensorInfo& {
      return sharded ? sharded->info(n) : file->info(n);
    };
    check_names(model, sharded ? sharded->keys() : file->keys(), contains,
                [&](const std::string& n) { return info(n).shape; }, where);
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      const auto type = io::safetensors_to_scalar_type(info(p.key()).dtype);
      if (!type || !at::isFloatingType(*type)) {
        fail_format(where, "tensor '", p.key(), "' is not floating point");
      }
      at::Tensor staged = at::empty(info(p.key()).shape, at::TensorOptions().dtype(*type));
      if (sharded) {
        sharded->read_into(p.key(), staged);
      } else {
        file->read_into(p.key(), staged);
      }
      p.value().set_data(staged.to(options.device, options.dtype));
    }
    model->to(options.device, options.dtype);
    model->eval();
    return model;
  });
}

void save_unet(UNet2DCondition model, const fs::path& folder, uint64_t max_shard_bytes) {
  fs::create_directories(folder);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& p : model->named_parameters()) tensors[p.key()] = p.value().detach().cpu().contiguous();
  io::save_safetensors_sharded(folder, tensors, max_shard_bytes, {{"format", "pt"}}, kUNetWeightsPrefix);
  write_file_atomic(folder / "config.json", unet_config_to_json(model->config).dump(2) + "\n");
}

}  // namespace concord::diffusion
