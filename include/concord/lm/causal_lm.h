// CausalLM: a decoder-only transformer language model built from a ModelConfig (GPT-2,
// Llama, Mistral, Qwen2, OLMo-2, PanGu-π; see concord/lm/model_config.h). Pre-norm blocks:
//
//   z = Norm_1(x)
//   x = x + Attention(z) + sum_i T_i(z)     (the T_i only with augmented shortcuts, PanGu-π Eq. 4)
//   x = x + FFN(Norm_2(x))                  (SIAF inside the FFN for PanGu-π, Eq. 7)
//
// or, with post_norm (OLMo-2), the norms on the sublayers' outputs:
//
//   x = x + Norm_1(Attention(x))            (q and k RMS-normed inside, qk_norm)
//   x = x + Norm_2(FFN(x))
//
// then a final norm and the LM head (tied to the token embedding or not). Positions come from
// the attention mask (cumsum - 1, as transformers' generate() builds them), so left-padded rows
// see the same positions as unpadded ones; with a KVCache, only the new tokens are run.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>  // torch::nn::Identity (embed_out)
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <ATen/core/Reduction.h>

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "concord/lm/model_config.h"
#include "concord/nn/attention.h"
#include "concord/nn/augmented_shortcut.h"
#include "concord/nn/embedding.h"
#include "concord/nn/feed_forward.h"
#include "concord/nn/kv_cache.h"
#include "concord/nn/linear.h"
#include "concord/nn/norm.h"

namespace concord::lm {

/// One transformer block: pre-norm, or post-norm with config.post_norm (the norms are LayerNorm
/// or RMSNorm per the config).
class TransformerBlockImpl : public torch::nn::Cloneable<TransformerBlockImpl> {
 public:
  explicit TransformerBlockImpl(ModelConfig config);
  void reset() override;
  /// x: [B, T, d]. `valid` ([B, T] 0/1, optional) marks real tokens (for SIAF's neighbour
  /// convolution); `cache`/`layer` as in CausalSelfAttention.
  at::Tensor forward(const at::Tensor& x, const nn::AttentionContext& ctx,
                     const at::Tensor& valid = {}, nn::KVCache* cache = nullptr,
                     int64_t layer = 0);
  void pretty_print(std::ostream& stream) const override;

  ModelConfig config;
  torch::nn::LayerNorm ln_attn{nullptr}, ln_mlp{nullptr};  ///< GPT-2
  /// The others; with post_norm they normalise the attention's and the FFN's outputs.
  nn::RMSNorm rms_attn{nullptr}, rms_mlp{nullptr};
  nn::CausalSelfAttention attn{nullptr};
  nn::AugmentedShortcut shortcut{nullptr};                 ///< PanGu-π
  nn::FeedForward mlp{nullptr};

 private:
  at::Tensor norm_attn(const at::Tensor& x);
  at::Tensor norm_mlp(const at::Tensor& x);
};
TORCH_MODULE(TransformerBlock);

class CausalLMImpl : public torch::nn::Cloneable<CausalLMImpl> {
 public:
  explicit CausalLMImpl(ModelConfig config);
  /// Builds every module and draws fresh weights: N(0, 0.02) for embeddings and projections,
  /// biases 0, norms 1; SIAF and augmented shortcuts keep their own identity-preserving
  /// initialisation (see concord/nn/siaf.h, concord/nn/augmented_shortcut.h). Under an
  /// nn::SkipInitGuard the embeddings and projections are allocated and left undrawn, for a
  /// loader that replaces them (load_pretrained does).
  void reset() override;

  /// Logits [B, T, V] (in the model's dtype) for `input_ids` [B, T] int64.
  /// `attention_mask` [B, past + T] (1: token, 0: padding) covers the cached tokens too, as in
  /// transformers; undefined means no padding. `position_ids` [B, T] overrides the positions
  /// derived from the mask. With `cache`, the new tokens attend to the cached ones and are
  /// appended to it.
  ///
  /// `segment_ids` [B, T] (optional, no cache) marks packed rows: tokens attend only within
  /// their own sample (1, 2, ... per row; 0 on padding), as data::block_causal_mask; give the
  /// samples' restarting position_ids with them.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                     nn::KVCache* cache = nullptr, const at::Tensor& position_ids = {},
                     const at::Tensor& segment_ids = {});

  /// The final-normed hidden states [B, T, d] (what forward() feeds the LM head). The
  /// residual stream before the final norm is read with nn::FeatureCapture: "embed_out" (the
  /// input embeddings), "layers.<l>" (block l's output); see concord/nn/feature_capture.h.
  at::Tensor hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                           nn::KVCache* cache = nullptr, const at::Tensor& position_ids = {},
                           const at::Tensor& segment_ids = {});
  /// LM head on hidden states [..., d] -> [..., V].
  at::Tensor logits(const at::Tensor& hidden);
  /// Next-token cross-entropy of the LM head on hidden states [..., d] (hidden_states' output)
  /// against targets [...] int64, mean over the targets that are not `ignore_index` (or their
  /// sum). Through ops::linear_cross_entropy: on CPU fp32 the [..., V] logits are never
  /// materialised; elsewhere half-precision logits are cast to fp32 before the loss.
  at::Tensor token_loss(const at::Tensor& hidden, const at::Tensor& targets,
                        at::Reduction::Reduction reduction = at::Reduction::Mean,
                        int64_t ignore_index = -100);

  /// A KV cache sized for this model.
  nn::KVCache make_cache() const { return nn::KVCache(config.num_layers); }

  /// The LM head's weight [V, d] (the token embedding when tied).
  at::Tensor lm_head_weight() const;
  int64_t num_parameters() const;
  void pretty_print(std::ostream& stream) const override;

  ModelConfig config;
  nn::Embedding embed{nullptr};      ///< [V, d]
  nn::Embedding positions{nullptr};  ///< [P, d], GPT-2 only
  /// The input embeddings (token + learned positions) the first block reads: an identity that
  /// reports them, so nn::FeatureCapture reads them at path "embed_out".
  torch::nn::Identity embed_out{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm ln_final{nullptr};
  nn::RMSNorm rms_final{nullptr};
  nn::Linear lm_head{nullptr};       ///< untied only
};
TORCH_MODULE(CausalLM);

/// Positions from a 0/1 mask [B, S]: cumsum - 1 at tokens, 1 at padding (transformers'
/// generate() convention); the last `steps` columns.
at::Tensor positions_from_mask(const at::Tensor& mask, int64_t steps);

}  // namespace concord::lm
