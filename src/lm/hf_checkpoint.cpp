#include "concord/lm/hf_checkpoint.h"

#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/safetensors.h"
#include "concord/io/safetensors_sharded.h"
#include "concord/nn/init.h"

namespace concord::lm {

namespace {

// One Concord parameter and the transformers tensors it is made of: `names` concatenated along
// dim 0 (each `rows[i]` rows), each transposed first when `transpose` (GPT-2's Conv1D).
struct Binding {
  std::vector<std::string> names;
  std::vector<int64_t> rows;
  at::Tensor param;
  bool transpose = false;
};

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream out;
  out << s;
  return out.str();
}

std::vector<Binding> bindings(CausalLM& model, const std::string& gpt2_prefix) {
  const ModelConfig& c = model->config;
  std::vector<Binding> out;
  auto one = [&](const std::string& name, const at::Tensor& p, bool transpose = false) {
    out.push_back({{name}, {p.size(0)}, p, transpose});
  };
  const int64_t q_rows = c.num_heads * c.head_dim, kv_rows = c.num_kv_heads * c.head_dim;
  if (c.family == ModelFamily::GPT2) {
    const std::string t = gpt2_prefix;
    one(t + "wte.weight", model->embed->weight);
    one(t + "wpe.weight", model->positions->weight);
    for (int64_t i = 0; i < c.num_layers; ++i) {
      auto* b = model->layers->ptr<TransformerBlockImpl>(static_cast<size_t>(i)).get();
      const std::string h = t + "h." + std::to_string(i) + ".";
      one(h + "ln_1.weight", b->ln_attn->weight);
      one(h + "ln_1.bias", b->ln_attn->bias);
      one(h + "attn.c_attn.weight", b->attn->qkv->weight, true);
      one(h + "attn.c_attn.bias", b->attn->qkv->bias);
      one(h + "attn.c_proj.weight", b->attn->out->weight, true);
      one(h + "attn.c_proj.bias", b->attn->out->bias);
      one(h + "ln_2.weight", b->ln_mlp->weight);
      one(h + "ln_2.bias", b->ln_mlp->bias);
      one(h + "mlp.c_fc.weight", b->mlp->fc_in->weight, true);
      one(h + "mlp.c_fc.bias", b->mlp->fc_in->bias);
      one(h + "mlp.c_proj.weight", b->mlp->fc_out->weight, true);
      one(h + "mlp.c_proj.bias", b->mlp->fc_out->bias);
    }
    one(t + "ln_f.weight", model->ln_final->weight);
    one(t + "ln_f.bias", model->ln_final->bias);
    if (!c.tie_word_embeddings) one("lm_head.weight", model->lm_head->weight);
    return out;
  }
  one("model.embed_tokens.weight", model->embed->weight);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto* b = model->layers->ptr<TransformerBlockImpl>(static_cast<size_t>(i)).get();
    const std::string l = "model.layers." + std::to_string(i) + ".";
    if (c.post_norm) {
      // OLMo-2: "post_attention_layernorm" normalises the attention's output, not the FFN's input.
      one(l + "post_attention_layernorm.weight", b->rms_attn->weight);
      one(l + "post_feedforward_layernorm.weight", b->rms_mlp->weight);
    } else {
      one(l + "input_layernorm.weight", b->rms_attn->weight);
      one(l + "post_attention_layernorm.weight", b->rms_mlp->weight);
    }
    const std::string a = l + "self_attn.";
    if (c.qk_norm) {
      one(a + "q_norm.weight", b->attn->q_norm->weight);
      one(a + "k_norm.weight", b->attn->k_norm->weight);
    }
    out.push_back({{a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"},
                   {q_rows, kv_rows, kv_rows}, b->attn->qkv->weight, false});
    if (c.qkv_bias) {
      out.push_back({{a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"},
                     {q_rows, kv_rows, kv_rows}, b->attn->qkv->bias, false});
    }
    one(a + "o_proj.weight", b->attn->out->weight);
    if (c.attn_out_bias) one(a + "o_proj.bias", b->attn->out->bias);
    const std::string m = l + "mlp.";
    const int64_t inter = c.intermediate_size;
    out.push_back({{m + "gate_proj.weight", m + "up_proj.weight"}, {inter, inter},
                   b->mlp->fc_in->weight, false});
    if (c.mlp_bias) {
      out.push_back({{m + "gate_proj.bias", m + "up_proj.bias"}, {inter, inter},
                     b->mlp->fc_in->bias, false});
    }
    one(m + "down_proj.weight", b->mlp->fc_out->weight);
    if (c.mlp_bias) one(m + "down_proj.bias", b->mlp->fc_out->bias);
    if (b->mlp->siaf) {
      one(m + "siaf.a", b->mlp->siaf->a);
      one(m + "siaf.b", b->mlp->siaf->b);
      if (b->mlp->siaf->neighbour.defined()) one(m + "siaf.neighbour", b->mlp->siaf->neighbour);
    }
    if (b->shortcut) {
      const std::string s = l + "augmented_shortcut.";
      one(s + "fc1_weight", b->shortcut->fc1_weight);
      if (b->shortcut->fc1_bias.defined()) one(s + "fc1_bias", b->shortcut->fc1_bias);
      one(s + "fc2_weight", b->shortcut->fc2_weight);
      if (b->shortcut->fc2_bias.defined()) one(s + "fc2_bias", b->shortcut->fc2_bias);
    }
  }
  one("model.norm.weight", model->rms_final->weight);
  if (!c.tie_word_embeddings) one("lm_head.weight", model->lm_head->weight);
  return out;
}

// Names a checkpoint may hold that carry no weights Concord needs.
bool ignorable(const ModelConfig& c, const std::string& name) {
  auto ends_with = [&](const std::string& suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  if (c.tie_word_embeddings && name == "lm_head.weight") return true;  // a tied copy
  if (c.family == ModelFamily::GPT2) return ends_with(".attn.bias") || ends_with(".attn.masked_bias");
  return ends_with("rotary_emb.inv_freq");
}

}  // namespace

std::map<std::string, at::Tensor> to_hf_state_dict(CausalLM model) {
  torch::NoGradGuard no_grad;
  std::map<std::string, at::Tensor> out;
  for (const Binding& b : bindings(model, "transformer.")) {
    int64_t offset = 0;
    for (size_t i = 0; i < b.names.size(); ++i) {
      at::Tensor part = b.param.detach().narrow(0, offset, b.rows[i]);
      offset += b.rows[i];
      if (b.transpose) part = part.t();
      out[b.names[i]] = part.contiguous();
    }
  }
  return out;
}

namespace {

// Where a binding's tensors come from: the checkpoint's files (load_pretrained) or tensors in
// memory (load_hf_state_dict).
class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  /// nullopt for a dtype LibTorch lacks.
  virtual std::optional<at::ScalarType> dtype(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;
};

class MapSource : public TensorSource {
 public:
  explicit MapSource(const std::map<std::string, at::Tensor>& t) : tensors(t) {}
  bool contains(const std::string& name) const override { return tensors.count(name) > 0; }
  std::vector<int64_t> shape(const std::string& name) const override {
    const auto s = tensors.at(name).sizes();
    return {s.begin(), s.end()};
  }
  std::optional<at::ScalarType> dtype(const std::string& name) const override {
    return tensors.at(name).scalar_type();
  }
  std::vector<std::string> names() const override {
    std::vector<std::string> out;
    for (const auto& [name, t] : tensors) out.push_back(name);
    return out;
  }
  const std::map<std::string, at::Tensor>& tensors;
};

// A model.safetensors or the shards behind an index, mapped; nothing is read until asked.
class FileSource : public TensorSource {
 public:
  explicit FileSource(const std::filesystem::path& weights) {
    if (weights.filename() == io::kSafetensorsIndexName) {
      sharded = std::make_unique<io::ShardedSafetensors>(weights);
    } else {
      single = std::make_unique<io::SafetensorsFile>(weights);
    }
  }
  bool contains(const std::string& name) const override {
    return sharded ? sharded->contains(name) : single->contains(name);
  }
  const io::SafetensorsTensorInfo& info(const std::string& name) const {
    return sharded ? sharded->info(name) : single->info(name);
  }
  std::vector<int64_t> shape(const std::string& name) const override { return info(name).shape; }
  std::optional<at::ScalarType> dtype(const std::string& name) const override {
    return io::safetensors_to_scalar_type(info(name).dtype);
  }
  std::vector<std::string> names() const override {
    return sharded ? sharded->keys() : single->keys();
  }
  bool is_zero_copy(const std::string& name) const {
    return sharded ? sharded->is_zero_copy(name) : single->is_zero_copy(name);
  }
  at::Tensor view(const std::string& name) const {
    return sharded ? sharded->get(name) : single->get(name);
  }
  void read_into(const std::string& name, const at::Tensor& dest) const {
    if (sharded) {
      sharded->read_into(name, dest);
    } else {
      single->read_into(name, dest);
    }
  }

 private:
  std::unique_ptr<io::ShardedSafetensors> sharded;
  std::unique_ptr<io::SafetensorsFile> single;
};

// Checks every binding's tensors against `source` (present, the right shape, floating point)
// and that `source` holds nothing else: errors name `where` and the tensor, before any data is
// read.
void check_checkpoint(const CausalLM& model, const std::vector<Binding>& binds,
                      const TensorSource& source, const std::string& where,
                      const std::set<std::string>& extra = {}) {
  const ModelConfig& c = model->config;
  std::set<std::string> used;
  for (const Binding& b : binds) {
    for (size_t i = 0; i < b.names.size(); ++i) {
      const std::string& name = b.names[i];
      if (!source.contains(name)) {
        fail_format(where, "tensor '", name, "' is missing (", model_family_name(c.family),
                    " with ", c.num_layers, " layers needs it)");
      }
      used.insert(name);
      // Expected shape of this part in the checkpoint's layout.
      std::vector<int64_t> want(b.param.sizes().begin(), b.param.sizes().end());
      want[0] = b.rows[i];
      if (b.transpose) std::swap(want[0], want[1]);
      const std::vector<int64_t> got = source.shape(name);
      if (got != want) {
        fail_format(where, "tensor '", name, "' has shape ", shape_str(got), ", expected ",
                    shape_str(want));
      }
      const auto type = source.dtype(name);
      if (!type || !at::isFloatingType(*type)) {
        fail_format(where, "tensor '", name, "' has dtype ",
                    type ? std::string(c10::toString(*type)) : std::string("(one LibTorch lacks)"),
                    ", expected a floating-point type");
      }
    }
  }
  for (const auto& name : source.names()) {
    if (used.count(name) || extra.count(name) || ignorable(c, name)) continue;
    fail_format(where, "unexpected tensor '", name, "' (not part of a ",
                model_family_name(c.family), " model with this config)");
  }
}


void load_hf_state_dict_impl(CausalLM model, const std::map<std::string, at::Tensor>& tensors,
                             const std::string& source) {
  const ModelConfig& c = model->config;
  std::string prefix;
  if (c.family == ModelFamily::GPT2) {
    prefix = tensors.count("transformer.wte.weight") ? "transformer." : "";
  }
  torch::NoGradGuard no_grad;
  const std::vector<Binding> binds = bindings(model, prefix);
  check_checkpoint(model, binds, MapSource(tensors), source);
  for (const Binding& b : binds) {
    std::vector<at::Tensor> parts;
    for (const auto& name : b.names) {
      const at::Tensor& t = tensors.at(name);
      parts.push_back(b.transpose ? t.t() : t);
    }
    b.param.copy_(parts.size() == 1 ? parts[0] : at::cat(parts, 0));
  }
}

CausalLM load_pretrained_impl(const std::filesystem::path& folder, const LoadOptions& options,
                              std::map<std::string, at::Tensor>* extras) {
  const auto config_path = folder / "config.json";
  ModelConfig config = model_config_from_hf(load_json_file(config_path), config_path.string());
  // Without a head, the tied layout has no lm_head parameter, and ignorable() skips a stored one.
  if (options.headless) config.tie_word_embeddings = true;
  std::filesystem::path weights = folder / io::kSafetensorsIndexName;
  if (!std::filesystem::exists(weights)) weights = folder / "model.safetensors";
  if (!std::filesystem::exists(weights)) {
    fail_io(folder.string(), "no model.safetensors or ", io::kSafetensorsIndexName);
  }
  CONCORD_CHECK(at::isFloatingType(options.dtype), "load_pretrained: dtype must be floating point, got ",
                options.dtype);
  const FileSource files(weights);
  // The parameters are allocated and never initialised (no page of them is touched): each is
  // replaced below by the checkpoint's tensor or by memory filled from the file.
  CausalLM model = [&] {
    nn::SkipInitGuard skip;
    return CausalLM(config);
  }();
  std::string prefix;
  if (config.family == ModelFamily::GPT2) {
    prefix = files.contains("transformer.wte.weight") ? "transformer." : "";
  }
  torch::NoGradGuard no_grad;
  const std::vector<Binding> binds = bindings(model, prefix);
  const std::set<std::string> extra(options.extra_tensors.begin(), options.extra_tensors.end());
  check_checkpoint(model, binds, files, weights.string(), extra);
  for (const auto& name : options.extra_tensors) {
    if (!files.contains(name)) continue;
    CONCORD_CHECK(extras != nullptr, "load_pretrained: extra_tensors given without an extras map");
    const auto type = files.dtype(name);
    if (!type || !at::isFloatingType(*type)) {
      fail_format(weights.string(), "tensor '", name, "' is not floating point");
    }
    at::Tensor staged = at::empty(files.shape(name), at::TensorOptions().dtype(*type));
    files.read_into(name, staged);
    (*extras)[name] = staged.to(options.device, options.dtype);
  }
  const bool on_cpu = options.device.is_cpu();
  std::set<const void*> bound;
  for (const Binding& b : binds) {
    bound.insert(b.param.unsafeGetTensorImpl());
    const std::string& first = b.names[0];
    const at::ScalarType file_type = *files.dtype(first);
    if (options.map_weights && on_cpu && b.names.size() == 1 && !b.transpose &&
        file_type == options.dtype && files.is_zero_copy(first)) {
      // The parameter becomes a view of the mapped file: no copy, and its pages are read in
      // (and count as resident) only when a pass touches them. The view keeps the mapping alive.
      b.param.set_data(files.view(first));
      continue;
    }
    // Fused (q|k|v, gate|up), transposed (GPT-2's Conv1D), converted or moved parameters get
    // memory of their own, filled straight from the file so the mapping is never paged in.
    at::Tensor full = at::empty(b.param.sizes(), at::TensorOptions().dtype(options.dtype).device(options.device));
    int64_t offset = 0;
    for (size_t i = 0; i < b.names.size(); ++i) {
      at::Tensor part = full.narrow(0, offset, b.rows[i]);
      offset += b.rows[i];
      const at::ScalarType type = *files.dtype(b.names[i]);
      if (on_cpu && !b.transpose && type == options.dtype) {
        files.read_into(b.names[i], part);  // a row range of a contiguous tensor is contiguous
        continue;
      }
      const at::Tensor staged = at::empty(files.shape(b.names[i]), at::TensorOptions().dtype(type));
      files.read_into(b.names[i], staged);
      part.copy_(b.transpose ? staged.t() : staged);
    }
    b.param.set_data(full);
  }
  for (const auto& p : model->parameters()) {
    TORCH_INTERNAL_ASSERT(bound.count(p.unsafeGetTensorImpl()),
                          "load_pretrained: a parameter of the model has no checkpoint tensor");
  }
  model->to(options.device, options.dtype);  // buffers, if a module has any; parameters are there
  model->eval();
  return model;
}

}  // namespace

void load_hf_state_dict(CausalLM model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source) {
  translate_torch_errors("lm::load_hf_state_dict " + source,
                         [&] { load_hf_state_dict_impl(std::move(model), tensors, source); });
}

CausalLM load_pretrained(const std::filesystem::path& folder, const LoadOptions& options,
                         std::map<std::string, at::Tensor>* extras) {
  return translate_torch_errors("lm::load_pretrained " + folder.string(),
                                [&] { return load_pretrained_impl(folder, options, extras); });
}

void save_pretrained(CausalLM model, const std::filesystem::path& folder,
                     uint64_t max_shard_bytes, const std::map<std::string, at::Tensor>& extra,
                     const nlohmann::json& config_patch) {
  std::filesystem::create_directories(folder);
  auto tensors = to_hf_state_dict(model);
  for (const auto& [name, t] : extra) {
    CONCORD_CHECK(!tensors.count(name), "save_pretrained: extra tensor '", name,
                  "' is also a tensor of the model");
    tensors[name] = t.detach();
  }
  for (auto& [name, t] : tensors) t = t.cpu().contiguous();
  io::save_safetensors_sharded(folder, tensors, max_shard_bytes);
  Json config = model_config_to_hf(model->config);
  const auto dtype = model->embed->weight.scalar_type();
  config["dtype"] = dtype == at::kBFloat16 ? "bfloat16" : dtype == at::kHalf ? "float16" : "float32";
  if (config_patch.is_object()) {
    for (const auto& [key, value] : config_patch.items()) config[key] = value;
  }
  write_file_atomic(folder / "config.json", config.dump(2) + "\n");
}

}  // namespace concord::lm
