// Checkpoints of one component of a diffusers pipeline (the U-Net, the VAE, a CLIP text encoder)
// as diffusers' and transformers' save_pretrained write them: a folder with config.json and the
// weights in `<prefix>.safetensors`, or in shards `<prefix>-00001-of-0000N.safetensors` behind
// `<prefix>.safetensors.index.json` (io/safetensors_sharded.h), where the prefix is
// "diffusion_pytorch_model" for diffusers and "model" for transformers.
//
// Concord's modules carry the ecosystem's tensor names, so loading is a check and a copy: every
// parameter and buffer of the module must come from the checkpoint with its shape, and nothing
// else may be there; each error is a FormatError naming the file and the tensor, raised before
// any weight is copied. A name map translates the checkpoint's names first, for legacy names
// (the VAE's old `query/key/value/proj_attn` attention) and optional prefixes (transformers' CLIP
// with or without `text_model.`). A module must therefore register as buffers only what the
// checkpoint holds (transformers' non-persistent buffers are plain members, or dropped by the map).
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <torch/nn/module.h>

namespace concord::io {
class SafetensorsFile;
class ShardedSafetensors;
}  // namespace concord::io

namespace concord::diffusion {

/// Weight-file prefixes: diffusers' models and transformers' models.
inline constexpr const char* kDiffusersWeightsPrefix = "diffusion_pytorch_model";
inline constexpr const char* kTransformersWeightsPrefix = "model";

/// save_pretrained's default max_shard_size, "10GB" (huggingface_hub counts 10^9 bytes a GB).
inline constexpr uint64_t kSavePretrainedMaxShardBytes = uint64_t{10} * 1000 * 1000 * 1000;

/// Maps a checkpoint tensor name to the module's name for it: the name itself when nothing
/// changes, "" to drop a tensor the module does not hold on purpose. Empty function: identity.
using TensorNameMap = std::function<std::string(const std::string&)>;

struct ComponentLoadOptions {
  /// Floating-point parameters and buffers become this type; integer buffers keep theirs.
  /// Unset: the module's own type.
  c10::optional<at::ScalarType> dtype = at::kFloat;
  /// Unset: the module's own device.
  c10::optional<c10::Device> device = c10::Device(c10::kCPU);
};

/// One component's weights, opened and indexed by the module's names; tensors are read on demand.
class ComponentWeights {
 public:
  /// `folder`/<prefix>.safetensors.index.json when present, else `folder`/<prefix>.safetensors;
  /// IoError naming the folder when neither exists. FormatError naming the file when two of its
  /// tensors map to one name.
  ComponentWeights(const std::filesystem::path& folder, const std::string& prefix,
                   const TensorNameMap& map = {});
  /// Tensors in memory; `source` names them in errors.
  ComponentWeights(std::map<std::string, at::Tensor> tensors, std::string source,
                   const TensorNameMap& map = {});
  ~ComponentWeights();
  ComponentWeights(ComponentWeights&&) noexcept;
  ComponentWeights& operator=(ComponentWeights&&) noexcept;

  /// The index or the single file read (or the in-memory source): what errors name.
  const std::string& source() const { return source_; }
  /// The module-side names (after the map), sorted.
  std::vector<std::string> names() const;
  bool contains(const std::string& name) const { return checkpoint_name_.count(name) > 0; }
  /// The name the checkpoint stores `name` under.
  const std::string& checkpoint_name(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  /// The stored type; unset for one LibTorch lacks.
  c10::optional<at::ScalarType> dtype(const std::string& name) const;
  /// The stored tensor on the CPU, in its stored type.
  at::Tensor read(const std::string& name) const;

 private:
  void index_names(const std::vector<std::string>& stored, const TensorNameMap& map);
  std::string source_;
  std::unique_ptr<io::ShardedSafetensors> sharded_;
  std::unique_ptr<io::SafetensorsFile> file_;
  std::map<std::string, at::Tensor> memory_;
  std::map<std::string, std::string> checkpoint_name_;  // module name -> stored name
};

/// Checks that every parameter and buffer of `module` is in `weights` with its shape and type
/// class (floating point, or the buffer's integer type) and that nothing else is: FormatError
/// "<source>: tensor 'x' is missing (the config's <what> has it)", "... has shape [a, b],
/// expected [c, d]", "unexpected tensor 'y' (not part of a <what> with this config)". A renamed
/// tensor is named as stored and as read.
void check_component_weights(const torch::nn::Module& module, const ComponentWeights& weights,
                             const std::string& what);

/// check_component_weights, then each tensor read and copied into `module`, converted to
/// `options`' dtype (floating point only) and device. Under NoGradGuard.
void load_component_weights(torch::nn::Module& module, const ComponentWeights& weights,
                            const ComponentLoadOptions& options, const std::string& what);

/// Every parameter and buffer of `module` by name, detached, contiguous, on the CPU.
std::map<std::string, at::Tensor> component_state_dict(const torch::nn::Module& module);

/// Writes component_state_dict(module) into `folder` (created) as save_pretrained does: one
/// `<prefix>.safetensors`, or shards of at most `max_shard_bytes` and the index
/// (io::save_safetensors_sharded, metadata {"format": "pt"}). The caller writes config.json.
/// Returns the files written, the index (if any) last.
std::vector<std::filesystem::path> save_component_weights(
    const torch::nn::Module& module, const std::filesystem::path& folder,
    const std::string& prefix, uint64_t max_shard_bytes = kSavePretrainedMaxShardBytes);

}  // namespace concord::diffusion
