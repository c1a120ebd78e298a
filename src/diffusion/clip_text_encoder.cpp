#include "concord/diffusion/clip_text_encoder.h"

#include <cmath>

#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/diffusion/component_checkpoint.h"
#include "concord/ops/attention.h"
#include "config_fields.h"

namespace concord::diffusion {

namespace cf = config_fields;

namespace {

torch::nn::LayerNorm layer_norm(int64_t dim, double eps) {
  return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps));
}

class ClipAttentionImpl : public torch::nn::Cloneable<ClipAttentionImpl> {
 public:
  explicit ClipAttentionImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    const int64_t d = c_.hidden_size;
    q_proj = register_module("q_proj", torch::nn::Linear(d, d));
    k_proj = register_module("k_proj", torch::nn::Linear(d, d));
    v_proj = register_module("v_proj", torch::nn::Linear(d, d));
    out_proj = register_module("out_proj", torch::nn::Linear(d, d));
  }
  at::Tensor forward(const at::Tensor& x) {
    const int64_t B = x.size(0), T = x.size(1), H = c_.num_attention_heads, D = c_.hidden_size / H;
    auto heads = [&](const at::Tensor& t) { return t.view({B, T, H, D}).transpose(1, 2); };
    const at::Tensor o = ops::attention(heads(q_proj->forward(x)), heads(k_proj->forward(x)),
                                        heads(v_proj->forward(x)),
                                        ops::AttentionOptions().causal(true));
    return out_proj->forward(o.transpose(1, 2).reshape({B, T, c_.hidden_size}));
  }
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipAttention);

class ClipMlpImpl : public torch::nn::Cloneable<ClipMlpImpl> {
 public:
  explicit ClipMlpImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    fc1 = register_module("fc1", torch::nn::Linear(c_.hidden_size, c_.intermediate_size));
    fc2 = register_module("fc2", torch::nn::Linear(c_.intermediate_size, c_.hidden_size));
  }
  at::Tensor forward(const at::Tensor& x) {
    at::Tensor h = fc1->forward(x);
    // OpenAI CLIP's quick_gelu, or the exact (erf) GELU of OpenCLIP's bigG.
    h = c_.hidden_act == "quick_gelu" ? h * at::sigmoid(1.702 * h) : at::gelu(h);
    return fc2->forward(h);
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipMlp);

class ClipEncoderLayerImpl : public torch::nn::Cloneable<ClipEncoderLayerImpl> {
 public:
  explicit ClipEncoderLayerImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    self_attn = register_module("self_attn", ClipAttention(c_));
    layer_norm1 = register_module("layer_norm1", layer_norm(c_.hidden_size, c_.layer_norm_eps));
    mlp = register_module("mlp", ClipMlp(c_));
    layer_norm2 = register_module("layer_norm2", layer_norm(c_.hidden_size, c_.layer_norm_eps));
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = x + self_attn->forward(layer_norm1->forward(x));
    return h + mlp->forward(layer_norm2->forward(h));
  }
  ClipAttention self_attn{nullptr};
  torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
  ClipMlp mlp{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipEncoderLayer);

class ClipEmbeddingsImpl : public torch::nn::Cloneable<ClipEmbeddingsImpl> {
 public:
  explicit ClipEmbeddingsImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    token_embedding =
        register_module("token_embedding", torch::nn::Embedding(c_.vocab_size, c_.hidden_size));
    position_embedding = register_module(
        "position_embedding", torch::nn::Embedding(c_.max_position_embeddings, c_.hidden_size));
  }
  torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipEmbeddings);

class ClipEncoderImpl : public torch::nn::Cloneable<ClipEncoderImpl> {
 public:
  explicit ClipEncoderImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c_.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(c_));
  }
  torch::nn::ModuleList layers{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipEncoder);

class ClipTextTransformerImpl : public torch::nn::Cloneable<ClipTextTransformerImpl> {
 public:
  explicit ClipTextTransformerImpl(ClipTextConfig c) : c_(std::move(c)) { reset(); }
  void reset() override {
    embeddings = register_module("embeddings", ClipEmbeddings(c_));
    encoder = register_module("encoder", ClipEncoder(c_));
    final_layer_norm =
        register_module("final_layer_norm", layer_norm(c_.hidden_size, c_.layer_norm_eps));
  }
  ClipEmbeddings embeddings{nullptr};
  ClipEncoder encoder{nullptr};
  torch::nn::LayerNorm final_layer_norm{nullptr};

 private:
  ClipTextConfig c_;
};
TORCH_MODULE(ClipTextTransformer);

}  // namespace

// ---- config ----------------------------------------------------------------------------------

void ClipTextConfig::validate(const std::string& source) const {
  CONCORD_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 &&
                    num_hidden_layers > 0 && max_position_embeddings > 0,
                source, ": vocab_size, hidden_size, intermediate_size, num_hidden_layers and "
                        "max_position_embeddings must be positive");
  CONCORD_CHECK(num_attention_heads > 0 && hidden_size % num_attention_heads == 0, source,
                ": hidden_size ", hidden_size, " is not a multiple of num_attention_heads ",
                num_attention_heads);
  if (hidden_act != "quick_gelu" && hidden_act != "gelu") {
    fail_config(source, "key 'hidden_act': '", hidden_act, "' is not supported (quick_gelu, gelu)");
  }
  CONCORD_CHECK(projection_dim >= 0, source, ": projection_dim must be >= 0");
  // Sizes (config_fields.h): the parameter count stays inside int64, absurd sizes are refused.
  cf::check_range(source, "vocab_size", vocab_size, 1, cf::kMaxVocab);
  cf::check_range(source, "hidden_size", hidden_size, 1, cf::kMaxWidth);
  cf::check_range(source, "intermediate_size", intermediate_size, 1, 4 * cf::kMaxWidth);
  cf::check_range(source, "num_hidden_layers", num_hidden_layers, 1, cf::kMaxDepth);
  cf::check_range(source, "max_position_embeddings", max_position_embeddings, 1, cf::kMaxWidth);
  cf::check_range(source, "projection_dim", projection_dim, 0, cf::kMaxWidth);
}

ClipTextConfig clip_text_config_from_json(const Json& j, const std::string& source) {
  if (!j.is_object()) fail_config(source, "expected a JSON object");
  // A full CLIPConfig holds the text model's config under text_config.
  const Json& t = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
  ClipTextConfig c;
  c.vocab_size = cf::value_or<int64_t>(t, "vocab_size", c.vocab_size, source);
  c.hidden_size = cf::value_or<int64_t>(t, "hidden_size", c.hidden_size, source);
  c.intermediate_size = cf::value_or<int64_t>(t, "intermediate_size", c.intermediate_size, source);
  c.num_hidden_layers = cf::value_or<int64_t>(t, "num_hidden_layers", c.num_hidden_layers, source);
  c.num_attention_heads =
      cf::value_or<int64_t>(t, "num_attention_heads", c.num_attention_heads, source);
  c.max_position_embeddings =
      cf::value_or<int64_t>(t, "max_position_embeddings", c.max_position_embeddings, source);
  c.hidden_act = cf::value_or<std::string>(t, "hidden_act", c.hidden_act, source);
  c.layer_norm_eps = cf::value_or<double>(t, "layer_norm_eps", c.layer_norm_eps, source);
  c.eos_token_id = cf::value_or<int64_t>(t, "eos_token_id", c.eos_token_id, source);
  bool with_projection = false;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (!a.is_string()) continue;
      const std::string name = a.get<std::string>();
      if (name == "CLIPTextModelWithProjection") {
        with_projection = true;
      } else if (name != "CLIPTextModel") {
        fail_config(source, "key 'architectures': '", name,
                    "' is not a CLIP text model (CLIPTextModel, CLIPTextModelWithProjection)");
      }
    }
  }
  if (with_projection) c.projection_dim = cf::required<int64_t>(t, "projection_dim", source);
  c.validate(source);
  return c;
}

ClipTextConfig load_clip_text_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  return clip_text_config_from_json(load_json_file(file), file.string());
}

Json clip_text_config_to_json(const ClipTextConfig& c) {
  Json j;
  j["architectures"] = {c.projection_dim > 0 ? "CLIPTextModelWithProjection" : "CLIPTextModel"};
  j["model_type"] = "clip_text_model";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["hidden_act"] = c.hidden_act;
  j["layer_norm_eps"] = c.layer_norm_eps;
  j["eos_token_id"] = c.eos_token_id;
  if (c.projection_dim > 0) j["projection_dim"] = c.projection_dim;
  return j;
}

bool is_clip_text_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  if (!std::filesystem::is_regular_file(file)) return false;
  const Json j = load_json_file(file);
  if (!j.is_object()) return false;
  if (j.value("model_type", std::string()) == "clip_text_model") return true;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (a == "CLIPTextModel" || a == "CLIPTextModelWithProjection") return true;
    }
  }
  return false;
}

int64_t count_clip_text_parameters(const ClipTextConfig& c) {
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * (2 * d);
  return (c.vocab_size + c.max_position_embeddings) * d + c.num_hidden_layers * layer + 2 * d +
         c.projection_dim * d;
}

// ---- model -----------------------------------------------------------------------------------

const at::Tensor& ClipTextOutput::penultimate(int64_t clip_skip) const {
  const int64_t index = static_cast<int64_t>(hidden_states.size()) - 2 - clip_skip;
  CONCORD_CHECK(clip_skip >= 0 && index >= 0, "clip_skip ", clip_skip, " is out of range for ",
                hidden_states.size() - 1, " layers");
  return hidden_states[static_cast<size_t>(index)];
}

ClipTextModelImpl::ClipTextModelImpl(ClipTextConfig c) : config(std::move(c)) {
  config.validate();
  reset();
}

void ClipTextModelImpl::reset() {
  text_model = register_module("text_model", ClipTextTransformer(config).ptr());
  if (config.projection_dim > 0) {
    text_projection = register_module(
        "text_projection",
        torch::nn::Linear(torch::nn::LinearOptions(config.hidden_size, config.projection_dim).bias(false)));
  }
}

ClipTextOutput ClipTextModelImpl::forward(const at::Tensor& input_ids) {
  CONCORD_CHECK(input_ids.dim() == 2, "CLIP text model: input_ids must be [B, T], got ",
                input_ids.sizes());
  const int64_t T = input_ids.size(1);
  CONCORD_CHECK(T >= 1 && T <= config.max_position_embeddings, "CLIP text model: ", T,
                " tokens, at most max_position_embeddings = ", config.max_position_embeddings);
  auto& tm = *text_model->as<ClipTextTransformerImpl>();
  const at::Tensor ids = input_ids.to(at::kLong);
  const at::Tensor positions = at::arange(T, ids.options());
  ClipTextOutput out;
  at::Tensor h = tm.embeddings->token_embedding->forward(ids) +
                 tm.embeddings->position_embedding->forward(positions).unsqueeze(0);
  out.hidden_states.push_back(h);
  for (const auto& layer : *tm.encoder->layers) {
    h = layer->as<ClipEncoderLayerImpl>()->forward(h);
    out.hidden_states.push_back(h);
  }
  out.last_hidden_state = tm.final_layer_norm->forward(h);
  const at::Tensor eos_position = config.eos_token_id == 2
                                      ? ids.argmax(-1)
                                      : ids.eq(config.eos_token_id).to(at::kInt).argmax(-1);
  out.pooled = out.last_hidden_state.index(
      {at::arange(ids.size(0), ids.options()), eos_position});
  if (text_projection) out.text_embeds = text_projection->forward(out.pooled);
  return out;
}

ClipTextModel load_clip_text_encoder(const std::filesystem::path& folder,
                                     const ComponentLoadOptions& options) {
  return translate_torch_errors("diffusion::load_clip_text_encoder " + folder.string(), [&] {
    ClipTextModel model(load_clip_text_config(folder));
    const ComponentWeights weights(folder, kTransformersWeightsPrefix, [](const std::string& n) {
      if (n == "text_model.embeddings.position_ids" || n == "embeddings.position_ids") {
        return std::string();  // a buffer older transformers saved; positions are 0..T-1
      }
      if (n.rfind("text_model.", 0) == 0 || n.rfind("text_projection.", 0) == 0) return n;
      return "text_model." + n;
    });
    load_component_weights(*model, weights, options, "CLIP text model");
    model->eval();
    return model;
  });
}

void save_clip_text_encoder(ClipTextModel model, const std::filesystem::path& folder) {
  std::filesystem::create_directories(folder);
  save_component_weights(*model, folder, kTransformersWeightsPrefix);
  write_file_atomic(folder / "config.json", clip_text_config_to_json(model->config).dump(2) + "\n");
}

int64_t ClipTextModelImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace concord::diffusion
