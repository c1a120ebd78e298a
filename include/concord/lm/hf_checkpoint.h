// Hugging Face checkpoints for CausalLM: `config.json` plus `model.safetensors` (or shards behind
// `model.safetensors.index.json`), with transformers' tensor names and layouts, read and written
// so that transformers loads what Concord saves and the other way round:
//
//   GPT-2:  transformer.{wte,wpe,ln_f}, transformer.h.N.{ln_1,attn.c_attn,attn.c_proj,ln_2,
//           mlp.c_fc,mlp.c_proj}. Its Conv1D stores weights [in, out], the transpose of a Linear
//           ([out, in]), so they are transposed on the way in and out. The "transformer." prefix
//           is optional on load (the original hub checkpoint has none); the causal-mask buffers
//           attn.bias / attn.masked_bias of old checkpoints are ignored.
//   Llama, Mistral, Qwen2: model.{embed_tokens,norm}, model.layers.N.{input_layernorm,
//           post_attention_layernorm, self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj},
//           lm_head (absent when tied). q, k, v (and gate, up) are concatenated into Concord's
//           fused projections and split again on save.
//   OLMo-2: the Llama names without input_layernorm, with post_attention_layernorm (the norm
//           of the attention's output), post_feedforward_layernorm and self_attn.{q,k}_norm.
//   PanGu-π (Concord's own model_type "pangu_pi"): the Llama names plus
//           model.layers.N.mlp.siaf.{a,b[,neighbour]} and
//           model.layers.N.augmented_shortcut.{fc1_weight,fc1_bias,fc2_weight,fc2_bias}.
//
// A missing tensor, a tensor of the wrong shape, or a tensor the model does not have is a
// concord::FormatError naming the checkpoint and the tensor.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/lm/causal_lm.h"

namespace concord::lm {

/// The model's weights under transformers' names and layouts (CPU or not: as they are).
std::map<std::string, at::Tensor> to_hf_state_dict(CausalLM model);

/// Copies `tensors` (transformers' names and layouts) into `model` (converting dtype and
/// device). `source` names the checkpoint in errors; nothing is copied when a tensor is missing,
/// misshapen or unexpected.
void load_hf_state_dict(CausalLM model, const std::map<std::string, at::Tensor>& tensors,
                        const std::string& source);

struct LoadOptions {
  at::ScalarType dtype = at::kFloat;  ///< parameters are converted to this
  c10::Device device = c10::Device(c10::kCPU);
  /// On the CPU, a parameter stored in the file with this dtype as one tensor (everything but
  /// the fused q|k|v and gate|up projections and GPT-2's transposed Conv1D weights) becomes a
  /// view of the memory-mapped file instead of a copy: loading costs no second copy of it, and
  /// its pages are read in as passes touch them. The mapping is private (writes never reach the
  /// file) and lives as long as the parameter; the files must not be modified in place while
  /// the model lives (replacing them by rename, as save_pretrained does, is safe). false: every
  /// parameter gets memory of its own.
  bool map_weights = true;
  /// Build and read the model without its LM head: the backbone of a
  /// `...ForSequenceClassification` checkpoint (a reward model), or of a causal LM whose head is
  /// not wanted (lm_head.weight, if present, is skipped). The model's config then says
  /// tie_word_embeddings (its logits, if ever asked for, use the token embedding).
  bool headless = false;
  /// Tensors the checkpoint may hold beside the model's (a classifier's "score.weight"):
  /// load_pretrained reads those present into its `extras` argument instead of refusing them
  /// as unexpected.
  std::vector<std::string> extra_tensors;
};

/// Loads a model folder: config.json (Hugging Face) and its safetensors weights (an index
/// preferred over model.safetensors). The model is returned in eval mode. The parameters are
/// never initialised first (nn::SkipInitGuard) and those that are not mapped (map_weights) are
/// read from the file straight into their own memory, so an N-byte checkpoint loads into about
/// N bytes of resident memory, not 2N or 3N.
CausalLM load_pretrained(const std::filesystem::path& folder, const LoadOptions& options = {},
                         std::map<std::string, at::Tensor>* extras = nullptr);

/// Writes config.json and the weights into `folder` as transformers' save_pretrained does:
/// one model.safetensors, or shards of at most `max_shard_bytes` and an index. `extra` tensors
/// (a classifier head) are written beside the model's, and `config_patch`'s keys replace or add
/// to config.json's (a classifier's architectures and labels).
void save_pretrained(CausalLM model, const std::filesystem::path& folder,
                     uint64_t max_shard_bytes = uint64_t{5} << 30,
                     const std::map<std::string, at::Tensor>& extra = {},
                     const nlohmann::json& config_patch = {});

}  // namespace concord::lm
