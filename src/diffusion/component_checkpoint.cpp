#include "concord/diffusion/component_checkpoint.h"

#include <set>
#include <sstream>

#include <torch/torch.h>

#include "concord/core/error.h"
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

// Parameters then buffers, each once, under their dotted names.
std::vector<std::pair<std::string, at::Tensor>> module_tensors(const torch::nn::Module& module) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : module.named_parameters()) out.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers()) out.emplace_back(b.key(), b.value());
  return out;
}

}  // namespace

ComponentWeights::ComponentWeights(const fs::path& folder, const std::string& prefix,
                                   const TensorNameMap& map) {
  const fs::path index = folder / (prefix + ".safetensors.index.json");
  const fs::path single = folder / (prefix + ".safetensors");
  if (fs::exists(index)) {
    sharded_ = std::make_unique<io::ShardedSafetensors>(index);
    source_ = index.string();
    index_names(sharded_->keys(), map);
  } else if (fs::exists(single)) {
    file_ = std::make_unique<io::SafetensorsFile>(single);
    source_ = single.string();
    index_names(file_->keys(), map);
  } else {
    fail_io(folder.string(), "no ", prefix, ".safetensors or its index");
  }
}

ComponentWeights::ComponentWeights(std::map<std::string, at::Tensor> tensors, std::string source,
                                   const TensorNameMap& map)
    : source_(std::move(source)), memory_(std::move(tensors)) {
  std::vector<std::string> stored;
  for (const auto& [name, t] : memory_) stored.push_back(name);
  index_names(stored, map);
}

ComponentWeights::~ComponentWeights() = default;
ComponentWeights::ComponentWeights(ComponentWeights&&) noexcept = default;
ComponentWeights& ComponentWeights::operator=(ComponentWeights&&) noexcept = default;

void ComponentWeights::index_names(const std::vector<std::string>& stored, const TensorNameMap& map) {
  for (const auto& name : stored) {
    const std::string mapped = map ? map(name) : name;
    if (mapped.empty()) continue;
    const auto [it, fresh] = checkpoint_name_.emplace(mapped, name);
    if (!fresh) {
      fail_format(source_, "tensors '", it->second, "' and '", name, "' are both read as '", mapped,
                  "'");
    }
  }
}

std::vector<std::string> ComponentWeights::names() const {
  std::vector<std::string> out;
  for (const auto& [name, stored] : checkpoint_name_) out.push_back(name);
  return out;
}

const std::string& ComponentWeights::checkpoint_name(const std::string& name) const {
  auto it = checkpoint_name_.find(name);
  CONCORD_CHECK(it != checkpoint_name_.end(), source_, ": no tensor '", name, "'");
  return it->second;
}

std::vector<int64_t> ComponentWeights::shape(const std::string& name) const {
  const std::string& stored = checkpoint_name(name);
  if (sharded_) return sharded_->info(stored).shape;
  if (file_) return file_->info(stored).shape;
  return memory_.at(stored).sizes().vec();
}

c10::optional<at::ScalarType> ComponentWeights::dtype(const std::string& name) const {
  const std::string& stored = checkpoint_name(name);
  if (!sharded_ && !file_) return memory_.at(stored).scalar_type();
  const auto type = io::safetensors_to_scalar_type(sharded_ ? sharded_->info(stored).dtype
                                                            : file_->info(stored).dtype);
  return type ? c10::optional<at::ScalarType>(*type) : c10::nullopt;
}

at::Tensor ComponentWeights::read(const std::string& name) const {
  const std::string& stored = checkpoint_name(name);
  if (!sharded_ && !file_) return memory_.at(stored);
  const auto type = dtype(name);
  if (!type) fail_format(source_, "tensor '", stored, "' has a type LibTorch lacks");
  // read_into leaves the mapping's pages alone: the staged copy is the only one in memory.
  at::Tensor staged = at::empty(shape(name), at::TensorOptions().dtype(*type));
  if (sharded_) {
    sharded_->read_into(stored, staged);
  } else {
    file_->read_into(stored, staged);
  }
  return staged;
}

void check_component_weights(const torch::nn::Module& module, const ComponentWeights& weights,
                             const std::string& what) {
  const std::string& where = weights.source();
  auto named = [&](const std::string& name) {
    const std::string& stored = weights.checkpoint_name(name);
    return stored == name ? "'" + name + "'" : "'" + stored + "' (read as '" + name + "')";
  };
  std::set<std::string> wanted;
  for (const auto& [name, t] : module_tensors(module)) {
    wanted.insert(name);
    if (!weights.contains(name)) {
      fail_format(where, "tensor '", name, "' is missing (the config's ", what, " has it)");
    }
    const std::vector<int64_t> got = weights.shape(name);
    if (got != t.sizes().vec()) {
      fail_format(where, "tensor ", named(name), " has shape ", shape_str(got), ", expected ",
                  shape_str(t.sizes()));
    }
    const auto type = weights.dtype(name);
    if (at::isFloatingType(t.scalar_type())) {
      if (!type || !at::isFloatingType(*type)) {
        fail_format(where, "tensor ", named(name), " is not floating point");
      }
    } else if (!type || *type != t.scalar_type()) {
      fail_format(where, "tensor ", named(name), " is not of type ", t.scalar_type());
    }
  }
  for (const auto& name : weights.names()) {
    if (!wanted.count(name)) {
      fail_format(where, "unexpected tensor ", named(name), " (not part of a ", what,
                  " with this config)");
    }
  }
}

void load_component_weights(torch::nn::Module& module, const ComponentWeights& weights,
                            const ComponentLoadOptions& options, const std::string& what) {
  check_component_weights(module, weights, what);
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : module_tensors(module)) {
    const at::Tensor stored = weights.read(name);
    const at::ScalarType type =
        at::isFloatingType(t.scalar_type()) && options.dtype ? *options.dtype : t.scalar_type();
    const c10::Device device = options.device ? *options.device : t.device();
    if (type == t.scalar_type() && device == t.device()) {
      t.copy_(stored);  // converts the stored type in place
    } else {
      t.set_data(stored.to(device, type));
    }
  }
}

std::map<std::string, at::Tensor> component_state_dict(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : module_tensors(module)) out[name] = t.detach().cpu().contiguous();
  return out;
}

std::vector<fs::path> save_component_weights(const torch::nn::Module& module, const fs::path& folder,
                                             const std::string& prefix, uint64_t max_shard_bytes) {
  fs::create_directories(folder);
  return io::save_safetensors_sharded(folder, component_state_dict(module), max_shard_bytes,
                                      {{"format", "pt"}}, prefix);
}

}  // namespace concord::diffusion
