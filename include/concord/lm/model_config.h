// ModelConfig: the architecture of a decoder-only language model, for every family Concord
// builds: GPT-2 (Radford et al. 2019: learned positions, LayerNorm, GELU MLP, tied embeddings),
// Llama / Mistral / Qwen2 (RoPE, RMSNorm, SwiGLU, grouped-query attention; Mistral's sliding
// window; Qwen2's q/k/v biases), OLMo-2 (OLMo et al., "2 OLMo 2 Furious", arXiv 2501.00656:
// Llama-style blocks with the RMSNorm moved onto each sublayer's output, x + Norm(f(x)), and
// RMSNorm on q and k) and PanGu-π (arXiv 2312.17276: Llama-style blocks with the series
// informed activation, Eq. 7, in the FFN and augmented shortcuts, Eq. 4, beside the attention).
// RoPE's frequencies may be scaled (linear, dynamic NTK, YaRN, Llama 3.1: concord/nn/attention.h
// has the equations).
//
// Read from Concord's own model configs (JSON validated by model_config_schema(): an unknown key
// is an error naming the file and the key; architecture keys left out take the family's
// values) or from a Hugging Face `config.json` (model_type gpt2, llama, mistral, qwen2, olmo2,
// and Concord's pangu_pi; RoPE scaling from `rope_scaling` or transformers 5's
// `rope_parameters`). count_parameters() counts exactly, from the config alone.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/config.h"
#include "concord/nn/attention.h"

namespace concord::lm {

enum class ModelFamily { GPT2, Llama, Mistral, Qwen2, PanGuPi, Olmo2 };

/// "gpt2", "llama", "mistral", "qwen2", "pangu_pi", "olmo2".
const char* model_family_name(ModelFamily family);
/// Inverse of model_family_name; nullopt for any other name.
std::optional<ModelFamily> parse_model_family(const std::string& name);

struct ModelConfig {
  ModelFamily family = ModelFamily::Llama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;       ///< resolved: never 0
  int64_t head_dim = 0;           ///< resolved: never 0
  int64_t intermediate_size = 0;  ///< resolved: never 0
  int64_t max_position_embeddings = 2048;

  bool layer_norm = false;        ///< LayerNorm with bias (GPT-2) instead of RMSNorm
  double norm_eps = 1e-6;
  bool learned_positions = false; ///< GPT-2's position table instead of RoPE
  double rope_theta = 10000.0;
  nn::RopeScaling rope_scaling;   ///< default: unscaled RoPE
  bool gated_mlp = true;          ///< SwiGLU instead of a two-layer MLP
  std::string hidden_act = "silu";  ///< transformers' name (gelu_new, gelu, relu, silu)
  bool qkv_bias = false;
  bool attn_out_bias = false;
  bool mlp_bias = false;
  bool tie_word_embeddings = false;
  int64_t sliding_window = 0;     ///< 0: full causal attention
  /// Norms on each sublayer's output, x + Norm(f(x)) (OLMo-2), instead of its input,
  /// x + f(Norm(x)); the final norm stays.
  bool post_norm = false;
  /// RMSNorm over q and k (each over all its heads) before RoPE (OLMo-2).
  bool qk_norm = false;

  // PanGu-π.
  int64_t siaf_terms = 0;                ///< 0: SIAF off
  std::string siaf_activation = "silu";  ///< base activation of the SIAF (silu, gelu, relu)
  int64_t siaf_neighbour_kernel = 0;     ///< 0 or 1: no neighbour convolution
  int64_t shortcut_paths = 0;            ///< T; 0: no augmented shortcuts
  int64_t shortcut_reduction = 32;       ///< r

  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;

  /// Checks sizes and combinations; `source` names the config in errors.
  void validate(const std::string& source = "model config") const;
};

/// The schema of Concord model configs (configs/models/*.json).
const ConfigSchema& model_config_schema();

/// A ModelConfig from an already-parsed Concord config (resolved against the schema here).
ModelConfig model_config_from_json(const Json& json, const std::string& source);
/// Loads and validates a Concord model config file.
ModelConfig load_model_config(const std::filesystem::path& path);

/// A ModelConfig from a Hugging Face config.json object (`source` names it in errors). Keys the
/// model does not use are ignored, as transformers does; features Concord does not implement
/// (a rope type other than default, linear, dynamic, yarn and llama3, partial rotary factors,
/// Qwen2's use_sliding_window, GPT-2's scale_attn_by_inverse_layer_idx, ...) are errors that
/// name the key.
ModelConfig model_config_from_hf(const Json& json, const std::string& source);
/// The config.json transformers writes for this model (model_type pangu_pi for PanGu-π; RoPE in
/// transformers 5's `rope_parameters`).
Json model_config_to_hf(const ModelConfig& config);
/// Concord's own JSON for this config (every key, resolved).
Json model_config_to_json(const ModelConfig& config);

/// Reads either kind: a file with "model_type" is a Hugging Face config.json, else a Concord
/// model config; a folder means its config.json.
ModelConfig load_any_model_config(const std::filesystem::path& path);

/// Exact parameter count of CausalLM(config) (tied embeddings counted once).
int64_t count_parameters(const ModelConfig& config);

/// The same count split by kind: token embedding, position embedding, attention, feed-forward,
/// SIAF, augmented shortcuts, norms (OLMo-2's q/k norms among them), LM head. Sums to
/// count_parameters().
std::vector<std::pair<std::string, int64_t>> count_parameters_by_module(const ModelConfig& config);

}  // namespace concord::lm
