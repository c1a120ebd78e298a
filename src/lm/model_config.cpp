#include "concord/lm/model_config.h"

#include <algorithm>

#include "concord/core/error.h"

namespace concord::lm {

namespace {

const std::vector<std::string>& family_names() {
  static const std::vector<std::string> names = {"gpt2",     "llama", "mistral",
                                                 "qwen2",    "olmo2", "pangu_pi"};
  return names;
}

std::string joined_families() {
  std::string out;
  for (const auto& n : family_names()) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Llama's FFN width rule (multiple_of = 256): round 8d/3 up to a multiple of 256. Gives 11008
// for d = 4096 (Llama-7B) and 5632 for d = 2048 (TinyLlama-1.1B).
int64_t llama_ffn_width(int64_t d) {
  const int64_t raw = (8 * d) / 3;
  return ((raw + 255) / 256) * 256;
}

// ---- reading typed values out of a Hugging Face config.json ---------------------------------

const Json* find_key(const Json& j, const std::string& key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t hf_int(const Json& j, const std::string& key, const std::string& source,
               std::optional<int64_t> fallback = std::nullopt) {
  const Json* v = find_key(j, key);
  if (v == nullptr) {
    if (fallback) return *fallback;
    fail_format(source, "missing key '", key, "'");
  }
  if (!v->is_number_integer()) fail_format(source, "key '", key, "': expected an integer, got ", v->dump());
  return v->get<int64_t>();
}

double hf_float(const Json& j, const std::string& key, const std::string& source, double fallback) {
  const Json* v = find_key(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_number()) fail_format(source, "key '", key, "': expected a number, got ", v->dump());
  return v->get<double>();
}

bool hf_bool(const Json& j, const std::string& key, const std::string& source, bool fallback) {
  const Json* v = find_key(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) fail_format(source, "key '", key, "': expected true or false, got ", v->dump());
  return v->get<bool>();
}

std::string hf_string(const Json& j, const std::string& key, const std::string& source,
                      const std::string& fallback) {
  const Json* v = find_key(j, key);
  if (v == nullptr) return fallback;
  if (!v->is_string()) fail_format(source, "key '", key, "': expected a string, got ", v->dump());
  return v->get<std::string>();
}

// Token ids may be an integer or (Llama-3) a list of them; Concord keeps the first.
std::optional<int64_t> hf_token(const Json& j, const std::string& key, const std::string& source) {
  const Json* v = find_key(j, key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_array() && !v->empty() && (*v)[0].is_number_integer()) return (*v)[0].get<int64_t>();
  if (v->is_array() && v->empty()) return std::nullopt;
  fail_format(source, "key '", key, "': expected a token id, got ", v->dump());
}

void apply_family_defaults(ModelConfig& c) {
  const bool gpt2 = c.family == ModelFamily::GPT2;
  c.layer_norm = gpt2;
  c.learned_positions = gpt2;
  c.gated_mlp = !gpt2;
  c.hidden_act = gpt2 ? "gelu_new" : "silu";
  c.qkv_bias = gpt2 || c.family == ModelFamily::Qwen2;
  c.attn_out_bias = gpt2;
  c.mlp_bias = gpt2;
  c.tie_word_embeddings = gpt2;
  c.norm_eps = gpt2 ? 1e-5 : 1e-6;
  c.max_position_embeddings = gpt2 ? 1024 : 2048;
  c.siaf_terms = c.family == ModelFamily::PanGuPi ? 2 : 0;
  c.shortcut_paths = c.family == ModelFamily::PanGuPi ? 1 : 0;
  c.post_norm = c.family == ModelFamily::Olmo2;
  c.qk_norm = c.family == ModelFamily::Olmo2;
}

std::string joined_rope_types() {
  std::string out;
  for (auto t : {nn::RopeType::Default, nn::RopeType::Linear, nn::RopeType::Dynamic,
                 nn::RopeType::Yarn, nn::RopeType::Llama3}) {
    out += (out.empty() ? "" : ", ") + std::string(nn::rope_type_name(t));
  }
  return out;
}

// RoPE from a Hugging Face config.json, resolved as transformers' RotaryEmbeddingConfigMixin
// resolves it: `rope_scaling` (the transformers 4 spelling) when it is a non-empty object, else
// `rope_parameters` (transformers 5); the type under "rope_type" (or the older "type"); theta
// from that object, else the top-level rope_theta; llama3's and yarn's original context from
// the object, else a top-level original_max_position_embeddings (Phi-3 style), else
// max_position_embeddings.
void read_hf_rope(const Json& j, const std::string& source, ModelConfig& c) {
  c.rope_theta = hf_float(j, "rope_theta", source, 10000.0);
  const Json* scaling = find_key(j, "rope_scaling");
  if (scaling != nullptr && scaling->is_object() && scaling->empty()) scaling = nullptr;
  const Json* params = scaling != nullptr ? scaling : find_key(j, "rope_parameters");
  if (params == nullptr) return;
  const std::string key = scaling != nullptr ? "rope_scaling" : "rope_parameters";
  if (!params->is_object()) fail_format(source, "key '", key, "': expected an object, got ", params->dump());
  const Json& p = *params;
  auto sub = [&](const char* name) { return key + "." + name; };
  auto number = [&](const char* name) -> std::optional<double> {
    const Json* v = find_key(p, name);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number()) fail_format(source, "key '", sub(name), "': expected a number, got ", v->dump());
    return v->get<double>();
  };
  auto required = [&](const char* name, const std::string& type) {
    auto v = number(name);
    if (!v) fail_format(source, "key '", sub(name), "' is missing (rope type '", type, "' needs it)");
    return *v;
  };
  if (auto theta = number("rope_theta")) c.rope_theta = *theta;
  const char* type_key = p.contains("rope_type") ? "rope_type" : "type";
  std::string type = "default";
  if (const Json* t = find_key(p, type_key)) {
    if (!t->is_string()) fail_format(source, "key '", sub(type_key), "': expected a string, got ", t->dump());
    type = t->get<std::string>();
  }
  const auto parsed = nn::parse_rope_type(type);
  if (!parsed) {
    fail_format(source, "key '", sub(type_key), "': rope type '", type,
                "' is not supported (expected one of: ", joined_rope_types(), ")");
  }
  if (auto partial = number("partial_rotary_factor"); partial && *partial != 1.0) {
    fail_format(source, "key '", sub("partial_rotary_factor"), "': ", *partial,
                " is not supported (RoPE over the whole head only)");
  }
  if (auto partial = hf_float(j, "partial_rotary_factor", source, 1.0); partial != 1.0) {
    fail_format(source, "key 'partial_rotary_factor': ", partial,
                " is not supported (RoPE over the whole head only)");
  }
  nn::RopeScaling& r = c.rope_scaling;
  r = nn::RopeScaling{};
  r.type = *parsed;
  r.max_position_embeddings = c.max_position_embeddings;
  const int64_t original = hf_int(j, "original_max_position_embeddings", source,
                                  c.max_position_embeddings);
  switch (r.type) {
    case nn::RopeType::Default: break;
    case nn::RopeType::Linear:
    case nn::RopeType::Dynamic: r.factor = required("factor", type); break;
    case nn::RopeType::Llama3:
      r.factor = required("factor", type);
      r.low_freq_factor = required("low_freq_factor", type);
      r.high_freq_factor = required("high_freq_factor", type);
      r.original_max_position_embeddings = hf_int(p, "original_max_position_embeddings",
                                                  source + ": key '" + key + "'", original);
      break;
    case nn::RopeType::Yarn: {
      r.original_max_position_embeddings = hf_int(p, "original_max_position_embeddings",
                                                  source + ": key '" + key + "'", original);
      // A null factor means the ratio of the two context lengths (DeepSeek-V3's configs).
      r.factor = number("factor").value_or(static_cast<double>(c.max_position_embeddings) /
                                           static_cast<double>(r.original_max_position_embeddings));
      r.attention_factor = number("attention_factor");
      r.mscale = number("mscale");
      r.mscale_all_dim = number("mscale_all_dim");
      // transformers reads these with `or`: a 0 falls back to the default too.
      const double fast = number("beta_fast").value_or(0.0), slow = number("beta_slow").value_or(0.0);
      r.beta_fast = fast != 0.0 ? fast : 32.0;
      r.beta_slow = slow != 0.0 ? slow : 1.0;
      r.truncate = hf_bool(p, "truncate", source + ": key '" + key + "'", true);
      break;
    }
  }
}

void write_rope_json(const nn::RopeScaling& r, Json& out) {
  out["rope_type"] = nn::rope_type_name(r.type);
  switch (r.type) {
    case nn::RopeType::Default: break;
    case nn::RopeType::Linear:
    case nn::RopeType::Dynamic: out["factor"] = r.factor; break;
    case nn::RopeType::Llama3:
      out["factor"] = r.factor;
      out["low_freq_factor"] = r.low_freq_factor;
      out["high_freq_factor"] = r.high_freq_factor;
      out["original_max_position_embeddings"] = r.original_max_position_embeddings;
      break;
    case nn::RopeType::Yarn:
      out["factor"] = r.factor;
      out["original_max_position_embeddings"] = r.original_max_position_embeddings;
      out["beta_fast"] = r.beta_fast;
      out["beta_slow"] = r.beta_slow;
      out["truncate"] = r.truncate;
      if (r.attention_factor) out["attention_factor"] = *r.attention_factor;
      if (r.mscale) out["mscale"] = *r.mscale;
      if (r.mscale_all_dim) out["mscale_all_dim"] = *r.mscale_all_dim;
      break;
  }
}

void resolve_sizes(ModelConfig& c) {
  if (c.num_kv_heads <= 0) c.num_kv_heads = c.num_heads;
  if (c.head_dim <= 0 && c.num_heads > 0) c.head_dim = c.hidden_size / c.num_heads;
  if (c.intermediate_size <= 0) {
    c.intermediate_size = c.gated_mlp ? llama_ffn_width(c.hidden_size) : 4 * c.hidden_size;
  }
}

}  // namespace

const char* model_family_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::GPT2: return "gpt2";
    case ModelFamily::Llama: return "llama";
    case ModelFamily::Mistral: return "mistral";
    case ModelFamily::Qwen2: return "qwen2";
    case ModelFamily::PanGuPi: return "pangu_pi";
    case ModelFamily::Olmo2: return "olmo2";
  }
  return "?";
}

std::optional<ModelFamily> parse_model_family(const std::string& name) {
  if (name == "gpt2") return ModelFamily::GPT2;
  if (name == "llama") return ModelFamily::Llama;
  if (name == "mistral") return ModelFamily::Mistral;
  if (name == "qwen2") return ModelFamily::Qwen2;
  if (name == "pangu_pi") return ModelFamily::PanGuPi;
  if (name == "olmo2") return ModelFamily::Olmo2;
  return std::nullopt;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* key) {
    if (v <= 0) fail_format(source, "key '", key, "': must be positive, got ", v);
  };
  positive(vocab_size, "vocab_size");
  positive(hidden_size, "hidden_size");
  positive(num_layers, "num_layers");
  positive(num_heads, "num_heads");
  positive(num_kv_heads, "num_kv_heads");
  positive(head_dim, "head_dim");
  positive(intermediate_size, "intermediate_size");
  positive(max_position_embeddings, "max_position_embeddings");
  // Bounds far above any real model, so a corrupt config fails here instead of overflowing the
  // parameter count or asking the allocator for petabytes.
  auto at_most = [&](int64_t v, int64_t limit, const char* key) {
    if (v > limit) fail_format(source, "key '", key, "': ", v, " is implausibly large (limit ", limit, ")");
  };
  at_most(vocab_size, int64_t{1} << 24, "vocab_size");
  at_most(hidden_size, int64_t{1} << 18, "hidden_size");
  at_most(num_layers, int64_t{1} << 12, "num_layers");
  at_most(num_heads, int64_t{1} << 12, "num_heads");
  at_most(head_dim, int64_t{1} << 14, "head_dim");
  at_most(intermediate_size, int64_t{1} << 20, "intermediate_size");
  at_most(max_position_embeddings, int64_t{1} << 24, "max_position_embeddings");
  at_most(siaf_terms, 64, "siaf.terms");
  at_most(siaf_neighbour_kernel, 64, "siaf.neighbour_kernel");
  at_most(shortcut_paths, 64, "augmented_shortcut.paths");
  if (num_heads % num_kv_heads != 0) {
    fail_format(source, "key 'num_kv_heads': num_heads ", num_heads, " is not a multiple of ",
                num_kv_heads);
  }
  if (!learned_positions && head_dim % 2 != 0) {
    fail_format(source, "key 'head_dim': RoPE needs an even head_dim, got ", head_dim);
  }
  if (learned_positions && num_heads * head_dim != hidden_size) {
    fail_format(source, "key 'num_heads': GPT-2 needs num_heads * head_dim == hidden_size");
  }
  if (!(norm_eps >= 0)) fail_format(source, "key 'norm_eps': must be >= 0, got ", norm_eps);
  if (!(rope_theta > 0)) fail_format(source, "key 'rope_theta': must be positive, got ", rope_theta);
  const nn::RopeScaling& r = rope_scaling;
  if (r.type != nn::RopeType::Default) {
    if (learned_positions) fail_format(source, "key 'rope_scaling': the model has no RoPE");
    if (!(r.factor > 0)) fail_format(source, "key 'rope_scaling.factor': must be positive, got ", r.factor);
  }
  if ((r.type == nn::RopeType::Yarn || r.type == nn::RopeType::Llama3) &&
      r.original_max_position_embeddings <= 0) {
    fail_format(source, "key 'rope_scaling.original_max_position_embeddings': must be positive, got ",
                r.original_max_position_embeddings);
  }
  if (r.type == nn::RopeType::Dynamic && r.max_position_embeddings != max_position_embeddings) {
    fail_format(source, "key 'rope_scaling': dynamic scaling's context ", r.max_position_embeddings,
                " differs from max_position_embeddings ", max_position_embeddings);
  }
  if (r.type == nn::RopeType::Llama3 && !(r.high_freq_factor > r.low_freq_factor)) {
    fail_format(source, "key 'rope_scaling.high_freq_factor': must exceed low_freq_factor (",
                r.low_freq_factor, "), got ", r.high_freq_factor);
  }
  if (r.type == nn::RopeType::Yarn && !(r.beta_fast > 0 && r.beta_slow > 0)) {
    fail_format(source, "key 'rope_scaling.beta_fast': beta_fast and beta_slow must be positive");
  }
  if (post_norm && shortcut_paths > 0) {
    fail_format(source, "key 'post_norm': augmented shortcuts read the pre-norm input; "
                "they cannot be combined with post-norm blocks");
  }
  if (sliding_window < 0) fail_format(source, "key 'sliding_window': must be >= 0");
  if (siaf_terms < 0) fail_format(source, "key 'siaf.terms': must be >= 0, got ", siaf_terms);
  if (siaf_neighbour_kernel < 0) fail_format(source, "key 'siaf.neighbour_kernel': must be >= 0");
  if (shortcut_paths < 0) fail_format(source, "key 'augmented_shortcut.paths': must be >= 0");
  if (shortcut_reduction <= 0) fail_format(source, "key 'augmented_shortcut.reduction': must be positive");
  if (siaf_activation != "silu" && siaf_activation != "gelu" && siaf_activation != "relu") {
    fail_format(source, "key 'siaf.activation': '", siaf_activation,
                "' is not one of: silu, gelu, relu");
  }
  // Throws concord::Error for an unknown name; rethrow naming the file.
  static const std::vector<std::string> acts = {"gelu_new", "gelu_pytorch_tanh", "gelu_fast",
                                                "gelu", "relu", "silu", "swish"};
  if (std::find(acts.begin(), acts.end(), hidden_act) == acts.end()) {
    fail_format(source, "key 'hidden_act': unknown activation '", hidden_act,
                "' (expected gelu_new, gelu_pytorch_tanh, gelu, relu or silu)");
  }
}

const ConfigSchema& model_config_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema siaf("PanGu-π series informed activation (Eq. 7) in the feed-forward layer");
    siaf.optional("terms", ConfigType::Int, nullptr,
                  "series terms n; 0 turns SIAF off (default: 2 for pangu_pi, else 0)")
        .choice("activation", {"silu", "gelu", "relu"}, "silu", "base activation sigma")
        .optional("neighbour_kernel", ConfigType::Int, 0,
                  "causal depthwise neighbour convolution width k over tokens (0 or 1: off)");
    ConfigSchema shortcut("PanGu-π augmented shortcuts (Eq. 4) beside the attention");
    shortcut
        .optional("paths", ConfigType::Int, nullptr,
                  "parallel bottleneck paths T; 0 turns them off (default: 1 for pangu_pi, else 0)")
        .optional("reduction", ConfigType::Int, 32, "bottleneck reduction r: d -> d/r -> d");
    ConfigSchema rope("RoPE frequency scaling, transformers' rope types");
    rope.choice("type", {"default", "linear", "dynamic", "yarn", "llama3"}, "default", "rope type")
        .optional("factor", ConfigType::Float, 1.0, "scaling factor s")
        .optional("original_max_position_embeddings", ConfigType::Int, nullptr,
                  "pre-training context L (yarn, llama3; default: max_position_embeddings)")
        .optional("low_freq_factor", ConfigType::Float, 1.0, "llama3")
        .optional("high_freq_factor", ConfigType::Float, 4.0, "llama3")
        .optional("beta_fast", ConfigType::Float, 32.0, "yarn")
        .optional("beta_slow", ConfigType::Float, 1.0, "yarn")
        .optional("attention_factor", ConfigType::Float, nullptr,
                  "yarn: cos/sin scale (default: 0.1 ln(s) + 1)")
        .optional("mscale", ConfigType::Float, nullptr, "yarn")
        .optional("mscale_all_dim", ConfigType::Float, nullptr, "yarn")
        .optional("truncate", ConfigType::Bool, true, "yarn: floor/ceil the correction range");
    ConfigSchema s("Concord model config: a decoder-only language model");
    s.required("family", ConfigType::String, "gpt2 | llama | mistral | qwen2 | olmo2 | pangu_pi")
        .required("vocab_size", ConfigType::Int, "token vocabulary size")
        .required("hidden_size", ConfigType::Int, "model width d")
        .required("num_layers", ConfigType::Int, "transformer blocks")
        .required("num_heads", ConfigType::Int, "query heads H")
        .optional("num_kv_heads", ConfigType::Int, nullptr, "key/value heads (default: num_heads)")
        .optional("head_dim", ConfigType::Int, nullptr, "per-head width (default: d / H)")
        .optional("intermediate_size", ConfigType::Int, nullptr,
                  "FFN width (default: 4d for gpt2; 8d/3 rounded up to 256 otherwise)")
        .optional("max_position_embeddings", ConfigType::Int, nullptr,
                  "longest sequence (default: 1024 for gpt2, 2048 otherwise)")
        .optional("norm", ConfigType::String, nullptr,
                  "layernorm | rmsnorm (default: layernorm for gpt2, rmsnorm otherwise)")
        .optional("norm_eps", ConfigType::Float, nullptr,
                  "normalisation epsilon (default: 1e-5 for gpt2, 1e-6 otherwise)")
        .optional("position", ConfigType::String, nullptr,
                  "learned | rope (default: learned for gpt2, rope otherwise)")
        .optional("rope_theta", ConfigType::Float, 10000.0, "RoPE base")
        .section("rope_scaling", rope, "RoPE frequency scaling (concord/nn/attention.h)")
        .optional("mlp", ConfigType::String, nullptr,
                  "mlp | gated (default: mlp for gpt2, gated (SwiGLU) otherwise)")
        .optional("hidden_act", ConfigType::String, nullptr,
                  "activation when SIAF is off (default: gelu_new for gpt2, silu otherwise)")
        .optional("qkv_bias", ConfigType::Bool, nullptr, "q/k/v biases (default: gpt2, qwen2)")
        .optional("attn_out_bias", ConfigType::Bool, nullptr, "attention output bias (gpt2)")
        .optional("mlp_bias", ConfigType::Bool, nullptr, "FFN biases (gpt2)")
        .optional("tie_word_embeddings", ConfigType::Bool, nullptr,
                  "LM head shares the token embedding (default: true for gpt2)")
        .optional("sliding_window", ConfigType::Int, 0, "attention window (0: full causal)")
        .optional("post_norm", ConfigType::Bool, nullptr,
                  "norms on each sublayer's output, x + Norm(f(x)) (default: true for olmo2)")
        .optional("qk_norm", ConfigType::Bool, nullptr,
                  "RMSNorm over q and k before RoPE (default: true for olmo2)")
        .optional("bos_token_id", ConfigType::Int, nullptr, "beginning-of-sequence id")
        .optional("eos_token_id", ConfigType::Int, nullptr, "end-of-sequence id")
        .optional("pad_token_id", ConfigType::Int, nullptr, "padding id")
        .section("siaf", siaf, "series informed activation")
        .section("augmented_shortcut", shortcut, "augmented shortcuts");
    return s;
  }();
  return schema;
}

ModelConfig model_config_from_json(const Json& input, const std::string& source) {
  const Json j = model_config_schema().resolve(input, source);
  ModelConfig c;
  const std::string family = j["family"].get<std::string>();
  auto parsed = parse_model_family(family);
  if (!parsed) {
    fail_format(source, "key 'family': '", family, "' is not one of: ", joined_families());
  }
  c.family = *parsed;
  apply_family_defaults(c);
  c.vocab_size = j["vocab_size"].get<int64_t>();
  c.hidden_size = j["hidden_size"].get<int64_t>();
  c.num_layers = j["num_layers"].get<int64_t>();
  c.num_heads = j["num_heads"].get<int64_t>();
  auto int_or = [&](const Json& v, int64_t fallback) {
    return v.is_null() ? fallback : v.get<int64_t>();
  };
  auto bool_or = [&](const Json& v, bool fallback) { return v.is_null() ? fallback : v.get<bool>(); };
  c.num_kv_heads = int_or(j["num_kv_heads"], 0);
  c.head_dim = int_or(j["head_dim"], 0);
  c.max_position_embeddings = int_or(j["max_position_embeddings"], c.max_position_embeddings);
  if (!j["norm"].is_null()) {
    const auto norm = j["norm"].get<std::string>();
    if (norm != "layernorm" && norm != "rmsnorm") {
      fail_format(source, "key 'norm': '", norm, "' is not one of: layernorm, rmsnorm");
    }
    c.layer_norm = norm == "layernorm";
  }
  if (!j["norm_eps"].is_null()) c.norm_eps = j["norm_eps"].get<double>();
  if (!j["position"].is_null()) {
    const auto pos = j["position"].get<std::string>();
    if (pos != "learned" && pos != "rope") {
      fail_format(source, "key 'position': '", pos, "' is not one of: learned, rope");
    }
    c.learned_positions = pos == "learned";
  }
  c.rope_theta = j["rope_theta"].get<double>();
  if (!j["mlp"].is_null()) {
    const auto mlp = j["mlp"].get<std::string>();
    if (mlp != "mlp" && mlp != "gated") {
      fail_format(source, "key 'mlp': '", mlp, "' is not one of: mlp, gated");
    }
    c.gated_mlp = mlp == "gated";
  }
  if (!j["hidden_act"].is_null()) c.hidden_act = j["hidden_act"].get<std::string>();
  c.qkv_bias = bool_or(j["qkv_bias"], c.qkv_bias);
  c.attn_out_bias = bool_or(j["attn_out_bias"], c.attn_out_bias);
  c.mlp_bias = bool_or(j["mlp_bias"], c.mlp_bias);
  c.tie_word_embeddings = bool_or(j["tie_word_embeddings"], c.tie_word_embeddings);
  c.sliding_window = j["sliding_window"].get<int64_t>();
  c.post_norm = bool_or(j["post_norm"], c.post_norm);
  c.qk_norm = bool_or(j["qk_norm"], c.qk_norm);
  c.intermediate_size = int_or(j["intermediate_size"], 0);
  {
    const Json& r = j["rope_scaling"];
    nn::RopeScaling& sc = c.rope_scaling;
    sc.type = *nn::parse_rope_type(r["type"].get<std::string>());
    sc.factor = r["factor"].get<double>();
    sc.max_position_embeddings = c.max_position_embeddings;
    sc.original_max_position_embeddings =
        int_or(r["original_max_position_embeddings"], c.max_position_embeddings);
    sc.low_freq_factor = r["low_freq_factor"].get<double>();
    sc.high_freq_factor = r["high_freq_factor"].get<double>();
    sc.beta_fast = r["beta_fast"].get<double>();
    sc.beta_slow = r["beta_slow"].get<double>();
    auto opt = [](const Json& v) { return v.is_null() ? std::nullopt : std::optional<double>(v.get<double>()); };
    sc.attention_factor = opt(r["attention_factor"]);
    sc.mscale = opt(r["mscale"]);
    sc.mscale_all_dim = opt(r["mscale_all_dim"]);
    sc.truncate = r["truncate"].get<bool>();
  }
  for (const char* key : {"bos_token_id", "eos_token_id", "pad_token_id"}) {
    if (j[key].is_null()) continue;
    const int64_t id = j[key].get<int64_t>();
    if (std::string(key) == "bos_token_id") c.bos_token_id = id;
    if (std::string(key) == "eos_token_id") c.eos_token_id = id;
    if (std::string(key) == "pad_token_id") c.pad_token_id = id;
  }
  const Json& siaf = j["siaf"];
  c.siaf_terms = int_or(siaf["terms"], c.siaf_terms);
  c.siaf_activation = siaf["activation"].get<std::string>();
  c.siaf_neighbour_kernel = siaf["neighbour_kernel"].get<int64_t>();
  const Json& as = j["augmented_shortcut"];
  c.shortcut_paths = int_or(as["paths"], c.shortcut_paths);
  c.shortcut_reduction = as["reduction"].get<int64_t>();
  resolve_sizes(c);
  c.validate(source);
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& path) {
  return model_config_from_json(load_json_file(path), path.string());
}

ModelConfig model_config_from_hf(const Json& j, const std::string& source) {
  if (!j.is_object()) fail_format(source, "expected a JSON object");
  const std::string type = hf_string(j, "model_type", source, "");
  auto family = parse_model_family(type);
  if (!family) {
    fail_format(source, "key 'model_type': '", type, "' is not supported (expected one of: ",
                joined_families(), ")");
  }
  ModelConfig c;
  c.family = *family;
  apply_family_defaults(c);
  c.bos_token_id = hf_token(j, "bos_token_id", source);
  c.eos_token_id = hf_token(j, "eos_token_id", source);
  c.pad_token_id = hf_token(j, "pad_token_id", source);
  if (c.family == ModelFamily::GPT2) {
    c.vocab_size = hf_int(j, "vocab_size", source);
    c.hidden_size = hf_int(j, "n_embd", source);
    c.num_layers = hf_int(j, "n_layer", source);
    c.num_heads = hf_int(j, "n_head", source);
    c.intermediate_size = hf_int(j, "n_inner", source, 4 * c.hidden_size);
    c.max_position_embeddings = hf_int(j, "n_positions", source, 1024);
    c.norm_eps = hf_float(j, "layer_norm_epsilon", source, 1e-5);
    c.hidden_act = hf_string(j, "activation_function", source, "gelu_new");
    c.tie_word_embeddings = hf_bool(j, "tie_word_embeddings", source, true);
    if (!hf_bool(j, "scale_attn_weights", source, true)) {
      fail_format(source, "key 'scale_attn_weights': false is not supported");
    }
    if (hf_bool(j, "scale_attn_by_inverse_layer_idx", source, false)) {
      fail_format(source, "key 'scale_attn_by_inverse_layer_idx': true is not supported");
    }
    if (hf_bool(j, "add_cross_attention", source, false)) {
      fail_format(source, "key 'add_cross_attention': true is not supported (decoder-only)");
    }
  } else {
    c.vocab_size = hf_int(j, "vocab_size", source);
    c.hidden_size = hf_int(j, "hidden_size", source);
    c.num_layers = hf_int(j, "num_hidden_layers", source);
    c.num_heads = hf_int(j, "num_attention_heads", source);
    c.num_kv_heads = hf_int(j, "num_key_value_heads", source, c.num_heads);
    c.head_dim = hf_int(j, "head_dim", source, 0);
    c.intermediate_size = hf_int(j, "intermediate_size", source);
    c.max_position_embeddings = hf_int(j, "max_position_embeddings", source, 2048);
    c.norm_eps = hf_float(j, "rms_norm_eps", source, 1e-6);
    c.hidden_act = hf_string(j, "hidden_act", source, "silu");
    c.tie_word_embeddings = hf_bool(j, "tie_word_embeddings", source, false);
    read_hf_rope(j, source, c);
    if (c.family == ModelFamily::Llama || c.family == ModelFamily::PanGuPi ||
        c.family == ModelFamily::Olmo2) {
      const bool attention_bias = hf_bool(j, "attention_bias", source, false);
      c.qkv_bias = attention_bias;
      c.attn_out_bias = attention_bias;
    }
    if (c.family == ModelFamily::Llama || c.family == ModelFamily::PanGuPi) {
      c.mlp_bias = hf_bool(j, "mlp_bias", source, false);
    }
    if (c.family == ModelFamily::Mistral) c.sliding_window = hf_int(j, "sliding_window", source, 0);
    if (c.family == ModelFamily::Qwen2 && hf_bool(j, "use_sliding_window", source, false)) {
      fail_format(source, "key 'use_sliding_window': true is not supported for qwen2");
    }
    if (c.family == ModelFamily::PanGuPi) {
      c.siaf_terms = hf_int(j, "siaf_terms", source, 2);
      c.siaf_activation = hf_string(j, "siaf_activation", source, "silu");
      c.siaf_neighbour_kernel = hf_int(j, "siaf_neighbour_kernel", source, 0);
      c.shortcut_paths = hf_int(j, "shortcut_paths", source, 1);
      c.shortcut_reduction = hf_int(j, "shortcut_reduction", source, 32);
    }
  }
  resolve_sizes(c);
  c.validate(source);
  return c;
}

Json model_config_to_hf(const ModelConfig& c) {
  Json j = Json::object();
  auto tokens = [&] {
    j["bos_token_id"] = c.bos_token_id ? Json(*c.bos_token_id) : Json(nullptr);
    j["eos_token_id"] = c.eos_token_id ? Json(*c.eos_token_id) : Json(nullptr);
    if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  };
  j["model_type"] = model_family_name(c.family);
  j["dtype"] = "float32";
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  tokens();
  if (c.family == ModelFamily::GPT2) {
    j["architectures"] = Json::array({"GPT2LMHeadModel"});
    j["n_embd"] = c.hidden_size;
    j["n_layer"] = c.num_layers;
    j["n_head"] = c.num_heads;
    j["n_inner"] = c.intermediate_size;
    j["n_positions"] = c.max_position_embeddings;
    j["layer_norm_epsilon"] = c.norm_eps;
    j["activation_function"] = c.hidden_act;
    return j;
  }
  static const char* arch[] = {"", "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                               "PanGuPiForCausalLM", "Olmo2ForCausalLM"};
  j["architectures"] = Json::array({arch[static_cast<int>(c.family)]});
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.norm_eps;
  j["hidden_act"] = c.hidden_act;
  j["rope_theta"] = c.rope_theta;
  Json rope = {{"rope_theta", c.rope_theta}};
  write_rope_json(c.rope_scaling, rope);
  j["rope_parameters"] = rope;
  // transformers 4 reads only rope_scaling (without theta); 5 reads either, this one first.
  if (c.rope_scaling.type != nn::RopeType::Default) j["rope_scaling"] = rope;
  if (c.family == ModelFamily::Llama || c.family == ModelFamily::PanGuPi) {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.family == ModelFamily::Olmo2) j["attention_bias"] = c.qkv_bias;
  if (c.family == ModelFamily::Mistral) {
    j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  }
  if (c.family == ModelFamily::Qwen2) j["use_sliding_window"] = false;
  if (c.family == ModelFamily::PanGuPi) {
    j["siaf_terms"] = c.siaf_terms;
    j["siaf_activation"] = c.siaf_activation;
    j["siaf_neighbour_kernel"] = c.siaf_neighbour_kernel;
    j["shortcut_paths"] = c.shortcut_paths;
    j["shortcut_reduction"] = c.shortcut_reduction;
  }
  return j;
}

Json model_config_to_json(const ModelConfig& c) {
  Json j = Json::object();
  j["family"] = model_family_name(c.family);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_layers"] = c.num_layers;
  j["num_heads"] = c.num_heads;
  j["num_kv_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.intermediate_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["norm"] = c.layer_norm ? "layernorm" : "rmsnorm";
  j["norm_eps"] = c.norm_eps;
  j["position"] = c.learned_positions ? "learned" : "rope";
  j["rope_theta"] = c.rope_theta;
  {
    Json rope = Json::object();
    write_rope_json(c.rope_scaling, rope);
    rope["type"] = rope["rope_type"];
    rope.erase("rope_type");
    if (!rope.contains("factor")) rope["factor"] = c.rope_scaling.factor;
    j["rope_scaling"] = rope;
  }
  j["mlp"] = c.gated_mlp ? "gated" : "mlp";
  j["hidden_act"] = c.hidden_act;
  j["qkv_bias"] = c.qkv_bias;
  j["attn_out_bias"] = c.attn_out_bias;
  j["mlp_bias"] = c.mlp_bias;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["sliding_window"] = c.sliding_window;
  j["post_norm"] = c.post_norm;
  j["qk_norm"] = c.qk_norm;
  j["bos_token_id"] = c.bos_token_id ? Json(*c.bos_token_id) : Json(nullptr);
  j["eos_token_id"] = c.eos_token_id ? Json(*c.eos_token_id) : Json(nullptr);
  j["pad_token_id"] = c.pad_token_id ? Json(*c.pad_token_id) : Json(nullptr);
  j["siaf"] = {{"terms", c.siaf_terms},
               {"activation", c.siaf_activation},
               {"neighbour_kernel", c.siaf_neighbour_kernel}};
  j["augmented_shortcut"] = {{"paths", c.shortcut_paths}, {"reduction", c.shortcut_reduction}};
  return j;
}

ModelConfig load_any_model_config(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(path)) file = path / "config.json";
  const Json j = load_json_file(file);
  if (j.is_object() && j.contains("model_type")) return model_config_from_hf(j, file.string());
  return model_config_from_json(j, file.string());
}

std::vector<std::pair<std::string, int64_t>> count_parameters_by_module(const ModelConfig& c) {
  const int64_t d = c.hidden_size, L = c.num_layers, I = c.intermediate_size;
  const int64_t q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  const int64_t norm = c.layer_norm ? 2 * d : d;
  const int64_t qk_norm = c.qk_norm ? q + kv : 0;
  const int64_t attention =
      d * (q + 2 * kv) + (c.qkv_bias ? q + 2 * kv : 0) + q * d + (c.attn_out_bias ? d : 0);
  const int64_t ffn_in = c.gated_mlp ? 2 * I : I;
  const int64_t ffn = d * ffn_in + I * d + (c.mlp_bias ? ffn_in + d : 0);
  int64_t siaf = 0;
  if (c.siaf_terms > 0) {
    siaf = 2 * c.siaf_terms * I + (c.siaf_neighbour_kernel > 1 ? c.siaf_neighbour_kernel * I : 0);
  }
  int64_t shortcut = 0;
  if (c.shortcut_paths > 0) {
    const int64_t h = std::max<int64_t>(1, (d + c.shortcut_reduction - 1) / c.shortcut_reduction);
    shortcut = c.shortcut_paths * (h * d + h + d * h + d);
  }
  return {
      {"token_embedding", c.vocab_size * d},
      {"position_embedding", c.learned_positions ? c.max_position_embeddings * d : 0},
      {"attention", L * attention},
      {"feed_forward", L * ffn},
      {"siaf", L * siaf},
      {"augmented_shortcut", L * shortcut},
      {"norms", (2 * L + 1) * norm + L * qk_norm},
      {"lm_head", c.tie_word_embeddings ? 0 : c.vocab_size * d},
  };
}

int64_t count_parameters(const ModelConfig& config) {
  int64_t total = 0;
  for (const auto& [name, n] : count_parameters_by_module(config)) total += n;
  return total;
}

}  // namespace concord::lm
