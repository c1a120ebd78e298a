#include "concord/lm/causal_lm.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"
#include "concord/nn/init.h"
#include "concord/nn/linear.h"
#include "concord/ops/attention.h"
#include "concord/ops/linear_cross_entropy.h"
#include "concord/data/collate.h"

namespace concord::lm {

namespace {

constexpr double kInitStd = 0.02;

void init_linear(nn::Linear& linear) {
  if (nn::skip_init_enabled()) return;
  linear->weight.normal_(0.0, kInitStd);
  if (linear->bias.defined()) linear->bias.zero_();
}

ops::Activation siaf_activation(const ModelConfig& c) {
  return ops::activation_from_name(c.siaf_activation);
}

// OLMo-2's RMSNorm scales in fp32 before rounding (Olmo2RMSNorm), the others after.
nn::RMSNormOptions rms_options(const ModelConfig& c, int64_t dim) {
  return nn::RMSNormOptions(dim).eps(c.norm_eps).scale_before_cast(c.family == ModelFamily::Olmo2);
}

}  // namespace

at::Tensor positions_from_mask(const at::Tensor& mask, int64_t steps) {
  TORCH_CHECK(mask.dim() == 2 && mask.size(1) >= steps, "positions_from_mask: mask must be [B, S]"
              " with S >= ", steps, ", got ", mask.sizes());
  const at::Tensor m = mask.to(at::kLong);
  at::Tensor pos = m.cumsum(-1) - 1;
  pos.masked_fill_(m == 0, 1);
  return pos.narrow(1, mask.size(1) - steps, steps);
}

// ---- TransformerBlock ------------------------------------------------------------------------

TransformerBlockImpl::TransformerBlockImpl(ModelConfig c) : config(std::move(c)) { reset(); }

void TransformerBlockImpl::reset() {
  const ModelConfig& c = config;
  const int64_t d = c.hidden_size;
  if (c.layer_norm) {
    ln_attn = register_module("ln_attn",
                              torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.norm_eps)));
    ln_mlp = register_module("ln_mlp",
                             torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.norm_eps)));
  } else {
    rms_attn = register_module("rms_attn", nn::RMSNorm(rms_options(c, d)));
    rms_mlp = register_module("rms_mlp", nn::RMSNorm(rms_options(c, d)));
  }
  attn = register_module("attn", nn::CausalSelfAttention(
                                     nn::CausalSelfAttentionOptions(d, c.num_heads)
                                         .kv_heads(c.num_kv_heads)
                                         .head_dim(c.head_dim)
                                         .qkv_bias(c.qkv_bias)
                                         .out_bias(c.attn_out_bias)
                                         .rope(!c.learned_positions)
                                         .qk_norm(c.qk_norm)
                                         .qk_norm_options(rms_options(c, 1))));
  if (c.shortcut_paths > 0) {
    shortcut = register_module("shortcut", nn::AugmentedShortcut(
                                               nn::AugmentedShortcutOptions(d)
                                                   .paths(c.shortcut_paths)
                                                   .reduction(c.shortcut_reduction)));
  }
  mlp = register_module(
      "mlp", nn::FeedForward(nn::FeedForwardOptions(d, c.intermediate_size)
                                 .gated(c.gated_mlp)
                                 .activation(nn::feed_forward_activation_from_name(c.hidden_act))
                                 .bias(c.mlp_bias)
                                 .siaf_terms(c.siaf_terms)
                                 .siaf_activation(siaf_activation(c))
                                 .siaf_neighbour_kernel(c.siaf_neighbour_kernel)));
  torch::NoGradGuard no_grad;
  init_linear(attn->qkv);
  init_linear(attn->out);
  init_linear(mlp->fc_in);
  init_linear(mlp->fc_out);
}

at::Tensor TransformerBlockImpl::norm_attn(const at::Tensor& x) {
  return ln_attn ? nn::record_output(*ln_attn, ln_attn->forward(x)) : rms_attn->forward(x);
}

at::Tensor TransformerBlockImpl::norm_mlp(const at::Tensor& x) {
  return ln_mlp ? nn::record_output(*ln_mlp, ln_mlp->forward(x)) : rms_mlp->forward(x);
}

at::Tensor TransformerBlockImpl::forward(const at::Tensor& x, const nn::AttentionContext& ctx,
                                         const at::Tensor& valid, nn::KVCache* cache,
                                         int64_t layer) {
  at::Tensor* state = cache != nullptr ? &cache->state(layer) : nullptr;
  if (config.post_norm) {
    const at::Tensor y = x + norm_attn(attn->forward(x, ctx, cache, layer));
    return nn::record_output(*this, y + norm_mlp(mlp->forward_tokens(y, valid, state)));
  }
  const at::Tensor z = norm_attn(x);
  at::Tensor h = attn->forward(z, ctx, cache, layer);
  if (shortcut) h = h + shortcut->forward(z);  // AugMSA(Z) = MSA(Z) + Z + sum_i T_i(Z)
  const at::Tensor y = x + h;
  return nn::record_output(*this, y + mlp->forward_tokens(norm_mlp(y), valid, state));
}

void TransformerBlockImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::lm::TransformerBlock(" << model_family_name(config.family) << ")";
}

// ---- CausalLM --------------------------------------------------------------------------------

CausalLMImpl::CausalLMImpl(ModelConfig c) : config(std::move(c)) { reset(); }

void CausalLMImpl::reset() {
  config.validate();
  const ModelConfig& c = config;
  const int64_t d = c.hidden_size;
  embed = register_module("embed", nn::Embedding(c.vocab_size, d));
  if (c.learned_positions) {
    positions = register_module("positions", nn::Embedding(c.max_position_embeddings, d));
  }
  embed_out = register_module("embed_out", torch::nn::Identity());
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_layers; ++i) layers->push_back(TransformerBlock(c));
  if (c.layer_norm) {
    ln_final = register_module("ln_final",
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({d}).eps(c.norm_eps)));
  } else {
    rms_final = register_module("rms_final", nn::RMSNorm(rms_options(c, d)));
  }
  if (!c.tie_word_embeddings) {
    lm_head = register_module("lm_head", nn::Linear(nn::LinearOptions(d, c.vocab_size).bias(false)));
  }
  if (nn::skip_init_enabled()) return;
  torch::NoGradGuard no_grad;
  embed->weight.normal_(0.0, kInitStd);
  if (positions) positions->weight.normal_(0.0, kInitStd);
  if (lm_head) lm_head->weight.normal_(0.0, kInitStd);
}

at::Tensor CausalLMImpl::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                       nn::KVCache* cache, const at::Tensor& position_ids,
                                       const at::Tensor& segment_ids) {
  CONCORD_CHECK(input_ids.defined() && input_ids.dim() == 2,
                "CausalLM: input_ids must be [B, T], got ",
                input_ids.defined() ? input_ids.sizes() : at::IntArrayRef{});
  CONCORD_CHECK(!at::isFloatingType(input_ids.scalar_type()),
                "CausalLM: input_ids must be integer, got ", input_ids.scalar_type());
  const int64_t batch = input_ids.size(0), steps = input_ids.size(1);
  CONCORD_CHECK(steps > 0 && batch > 0, "CausalLM: empty input_ids ", input_ids.sizes());
  const c10::Device device = embed->weight.device();
  const at::Tensor ids = input_ids.to(device).to(at::kLong);
  {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    CONCORD_CHECK(lo >= 0 && hi < config.vocab_size, "CausalLM: token id ", lo < 0 ? lo : hi,
                  " outside the vocabulary [0, ", config.vocab_size, ")");
  }
  int64_t past = 0;
  if (cache != nullptr) {
    CONCORD_CHECK(cache->num_layers() == config.num_layers, "CausalLM: cache has ",
                  cache->num_layers(), " layers, the model ", config.num_layers);
    past = cache->length();
  }
  at::Tensor mask;
  if (attention_mask.defined()) {
    CONCORD_CHECK(attention_mask.dim() == 2 && attention_mask.size(0) == batch &&
                      attention_mask.size(1) == past + steps,
                  "CausalLM: attention_mask must be [B, past + T] = [", batch, ", ", past + steps,
                  "], got ", attention_mask.sizes());
    mask = attention_mask.to(device).to(at::kLong);
  }
  at::Tensor pos;
  if (position_ids.defined()) {
    CONCORD_CHECK(position_ids.dim() == 2 && position_ids.size(0) == batch &&
                      position_ids.size(1) == steps,
                  "CausalLM: position_ids must be [B, T] = [", batch, ", ", steps, "], got ",
                  position_ids.sizes());
    pos = position_ids.to(device).to(at::kLong);
  } else if (mask.defined()) {
    pos = positions_from_mask(mask, steps);
  } else {
    pos = at::arange(past, past + steps, at::TensorOptions().dtype(at::kLong).device(device))
              .unsqueeze(0)
              .expand({batch, steps});
  }

  at::Tensor x = nn::record_output(*embed, embed->forward(ids));
  if (positions) {
    const int64_t top = pos.max().item<int64_t>();
    CONCORD_CHECK(top < config.max_position_embeddings, "CausalLM: position ", top,
                  " is past max_position_embeddings ", config.max_position_embeddings);
    x = x + nn::record_output(*positions, positions->forward(pos));
  }
  nn::AttentionContext ctx;
  // Without padding and with no sliding window in reach the mask is plain causal, which the
  // fused attention op applies itself (memory O(T) instead of a [T, S] score matrix). Padding
  // and packed rows go to the same op as segment ids where a fused kernel serves this dtype and
  // device: its rule (same non-zero segment, or the query's own position) equals the padding
  // mask for every real query, and differs only in what a padding position reads, which no real
  // position ever sees. The composite with a materialised mask remains for sliding windows and
  // for dtypes without a kernel, where it keeps fp32 scores.
  const bool window_in_reach = config.sliding_window > 0 && past + steps > config.sliding_window;
  const bool fused_segments =
      ops::attention_is_fused(at::empty({1, 1, 1, config.head_dim}, embed->weight.options()));
  ctx.plain_causal = !mask.defined() && !segment_ids.defined() && !window_in_reach;
  if (segment_ids.defined()) {
    CONCORD_CHECK(cache == nullptr && !mask.defined(),
                  "CausalLM: segment_ids (packed rows) take neither a cache nor an attention_mask");
    CONCORD_CHECK(segment_ids.sizes() == ids.sizes(), "CausalLM: segment_ids must be [B, T] = [",
                  batch, ", ", steps, "], got ", segment_ids.sizes());
    CONCORD_CHECK(!window_in_reach,
                  "CausalLM: packed rows longer than the sliding window are not supported");
    if (fused_segments) {
      ctx.segment_ids = segment_ids.to(device).to(at::kLong);
    } else {
      ctx.mask = data::block_causal_mask(segment_ids.to(device));
    }
  } else if (mask.defined() && !window_in_reach && fused_segments) {
    ctx.segment_ids = mask.ne(0).to(at::kLong);
  } else if (!ctx.plain_causal) {
    ctx.mask = nn::causal_attention_mask(mask, batch, past, steps, config.sliding_window, device);
  }
  if (!config.learned_positions) {
    // OLMo-2 keeps the rotary tables in fp32 and rotates in fp32 (Olmo2RotaryEmbedding).
    const at::ScalarType table_type =
        config.family == ModelFamily::Olmo2 ? at::kFloat : x.scalar_type();
    std::tie(ctx.cos, ctx.sin) = nn::rope_tables(pos, config.head_dim, config.rope_theta,
                                                 config.rope_scaling, table_type);
  }
  const at::Tensor valid = mask.defined() ? mask.narrow(1, past, steps) : at::Tensor();
  x = nn::record_output(*embed_out, embed_out->forward(x));
  for (int64_t i = 0; i < config.num_layers; ++i) {
    x = layers->ptr<TransformerBlockImpl>(static_cast<size_t>(i))->forward(x, ctx, valid, cache, i);
  }
  if (cache != nullptr) cache->advance(steps);
  return ln_final ? nn::record_output(*ln_final, ln_final->forward(x)) : rms_final->forward(x);
}

at::Tensor CausalLMImpl::logits(const at::Tensor& hidden) {
  const at::Tensor y = nn::linear(hidden, lm_head_weight());
  return lm_head ? nn::record_output(*lm_head, y) : y;
}

at::Tensor CausalLMImpl::token_loss(const at::Tensor& hidden, const at::Tensor& targets,
                                    at::Reduction::Reduction reduction, int64_t ignore_index) {
  ops::LinearCrossEntropyOptions options;
  options.reduction = reduction;
  options.ignore_index = ignore_index;
  return ops::linear_cross_entropy(hidden, lm_head_weight(), targets, options);
}

at::Tensor CausalLMImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                 nn::KVCache* cache, const at::Tensor& position_ids,
                                 const at::Tensor& segment_ids) {
  return nn::record_output(
      *this, logits(hidden_states(input_ids, attention_mask, cache, position_ids, segment_ids)));
}

at::Tensor CausalLMImpl::lm_head_weight() const {
  return lm_head ? lm_head->weight : embed->weight;
}

int64_t CausalLMImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void CausalLMImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::lm::CausalLM(" << model_family_name(config.family)
         << ", layers=" << config.num_layers << ", d=" << config.hidden_size
         << ", heads=" << config.num_heads << "/" << config.num_kv_heads
         << ", vocab=" << config.vocab_size << ")";
}

}  // namespace concord::lm
