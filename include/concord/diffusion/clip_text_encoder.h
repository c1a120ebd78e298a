// CLIP's text transformer (Radford et al. 2021, "Learning Transferable Visual Models From Natural
// Language Supervision", Sec. 2.4) as Stable Diffusion XL uses two of them (Podell et al. 2023,
// "SDXL", Sec. 2.1): `text_encoder` (CLIP ViT-L/14's text model) and `text_encoder_2`
// (OpenCLIP ViT-bigG/14's, with the text projection). Module for module transformers'
// CLIPTextModel / CLIPTextModelWithProjection, with the same tensor names
// ("text_model.encoder.layers.0.self_attn.q_proj.weight", "text_projection.weight"):
//
//   h_0 = token_embedding(ids) + position_embedding(0..T-1)
//   h_l = h'_l + fc2(act(fc1(LN2(h'_l)))),  h'_l = h_{l-1} + out_proj(CausalMHA(LN1(h_{l-1})))
//   last = final_layer_norm(h_L);  pooled = last[eos position];  text_embeds = W_proj pooled
//
// act is quick_gelu (x sigmoid(1.702 x), OpenAI's CLIP) or gelu (OpenCLIP). SDXL conditions on
// the penultimate states h_{L-1} of both encoders (before the final layer norm) and on
// text_embeds of the second. The pooled position is transformers' rule: the first eos_token_id,
// or, for configs that say eos_token_id 2 (the legacy default), the largest id (CLIP's eos is
// the last id of its vocabulary). Attention is causal over all 77 positions, padding included,
// as the SDXL pipeline runs it (no attention mask); it runs on ops::attention.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/core/config.h"

namespace concord::diffusion {

/// transformers' CLIPTextConfig, the members the text model uses.
struct ClipTextConfig {
  int64_t vocab_size = 49408;
  int64_t hidden_size = 768;
  int64_t intermediate_size = 3072;
  int64_t num_hidden_layers = 12;
  int64_t num_attention_heads = 12;
  int64_t max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  ///< quick_gelu | gelu
  double layer_norm_eps = 1e-5;
  int64_t eos_token_id = 2;               ///< 2: pool at the largest id (legacy configs)
  /// > 0: CLIPTextModelWithProjection, text_projection [projection_dim, hidden_size], no bias.
  int64_t projection_dim = 0;

  void validate(const std::string& source = "clip text config") const;
};

/// Reads transformers' config.json (CLIPTextConfig; `architectures` decides whether the
/// projection is part of the model: CLIPTextModelWithProjection).
ClipTextConfig clip_text_config_from_json(const Json& json, const std::string& source);
ClipTextConfig load_clip_text_config(const std::filesystem::path& path);
Json clip_text_config_to_json(const ClipTextConfig& config);
/// Exact parameter count of the model the config builds.
int64_t count_clip_text_parameters(const ClipTextConfig& config);
/// True when `path` (a file, or a folder's config.json) is a transformers CLIP text model's
/// config (architectures CLIPTextModel / CLIPTextModelWithProjection, or model_type
/// clip_text_model).
bool is_clip_text_config(const std::filesystem::path& path);

/// What one forward pass returns.
struct ClipTextOutput {
  /// hidden_states[0] = the embeddings, [l] = layer l's output, as transformers'
  /// output_hidden_states: SDXL reads hidden_states[size - 2] (the penultimate layer).
  std::vector<at::Tensor> hidden_states;
  at::Tensor last_hidden_state;  ///< final_layer_norm(hidden_states.back()) [B, T, D]
  at::Tensor pooled;             ///< last_hidden_state at the eos position [B, D]
  at::Tensor text_embeds;        ///< text_projection(pooled) [B, P]; undefined without one
  /// hidden_states[size - 2 - clip_skip]: what SDXL conditions on (clip_skip 0).
  const at::Tensor& penultimate(int64_t clip_skip = 0) const;
};

class ClipTextModelImpl : public torch::nn::Cloneable<ClipTextModelImpl> {
 public:
  explicit ClipTextModelImpl(ClipTextConfig config);
  void reset() override;
  /// `input_ids` [B, T] int64, T <= max_position_embeddings.
  ClipTextOutput forward(const at::Tensor& input_ids);
  int64_t num_parameters() const;

  ClipTextConfig config;
  /// "text_model": embeddings.{token,position}_embedding, encoder.layers.i.{self_attn.{q,k,v,
  /// out}_proj, layer_norm1, mlp.{fc1,fc2}, layer_norm2}, final_layer_norm (classes private to
  /// the .cpp; the names are what matters).
  std::shared_ptr<torch::nn::Module> text_model;
  torch::nn::Linear text_projection{nullptr};  ///< only with projection_dim > 0
};
TORCH_MODULE(ClipTextModel);

struct ComponentLoadOptions;

/// Reads a transformers folder (config.json + model.safetensors, sharded too). Tensor names
/// with and without the "text_model." prefix are accepted (transformers 5 drops it when it
/// saves; hub checkpoints have it); a legacy "position_ids" buffer is ignored. Eval mode.
ClipTextModel load_clip_text_encoder(const std::filesystem::path& folder,
                                     const ComponentLoadOptions& options);
/// Writes config.json and model.safetensors with the hub's ("text_model.") names.
void save_clip_text_encoder(ClipTextModel model, const std::filesystem::path& folder);

}  // namespace concord::diffusion
