#include "concord/diffusion/unet.h"

#include <cmath>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/dropout.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"
#include "concord/ops/attention.h"
#include "concord/ops/geglu.h"
#include "conv_layers.h"

namespace concord::diffusion {

namespace F = torch::nn::functional;
using detail::conv3x3;
using detail::conv3x3_forward;
using detail::group_norm;

namespace {

// Holders that give diffusers' paths: "ff.net.0.proj", "downsamplers.0.conv".
class GegluProjImpl : public torch::nn::Cloneable<GegluProjImpl> {
 public:
  GegluProjImpl(int64_t in, int64_t out) : in_(in), out_(out) { reset(); }
  void reset() override { proj = register_module("proj", torch::nn::Linear(in_, out_)); }
  torch::nn::Linear proj{nullptr};

 private:
  int64_t in_, out_;
};
TORCH_MODULE(GegluProj);

class ResampleImpl : public torch::nn::Cloneable<ResampleImpl> {
 public:
  ResampleImpl(int64_t channels, int64_t stride) : channels_(channels), stride_(stride) { reset(); }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels_, channels_, 3)
                                                         .stride(stride_)
                                                         .padding(1)));
  }
  torch::nn::Conv2d conv{nullptr};

 private:
  int64_t channels_, stride_;
};
TORCH_MODULE(Resample);

}  // namespace

at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              int64_t freq_shift) {
  CONCORD_CHECK(timesteps.dim() == 1, "timestep_embedding: timesteps must be [B], got ",
                timesteps.sizes());
  const int64_t half = dim / 2;
  const auto opts = timesteps.options().dtype(at::kFloat);
  const at::Tensor exponent =
      at::arange(half, opts) * (-std::log(10000.0) / static_cast<double>(half - freq_shift));
  const at::Tensor args = timesteps.to(at::kFloat).unsqueeze(1) * at::exp(exponent).unsqueeze(0);
  at::Tensor emb = flip_sin_to_cos ? at::cat({at::cos(args), at::sin(args)}, -1)
                                   : at::cat({at::sin(args), at::cos(args)}, -1);
  if (dim % 2 == 1) emb = at::constant_pad_nd(emb, {0, 1});
  return emb;
}

// ---- TimestepEmbedding ----------------------------------------------------------------------

TimestepEmbeddingImpl::TimestepEmbeddingImpl(int64_t in, int64_t out) : in_(in), out_(out) { reset(); }

void TimestepEmbeddingImpl::reset() {
  linear_1 = register_module("linear_1", torch::nn::Linear(in_, out_));
  linear_2 = register_module("linear_2", torch::nn::Linear(out_, out_));
}

at::Tensor TimestepEmbeddingImpl::forward(const at::Tensor& x) {
  return nn::record_output(*this, linear_2->forward(at::silu(linear_1->forward(x))));
}

// ---- ResnetBlock2D --------------------------------------------------------------------------

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps)
    : in_(in), out_(out), temb_(temb), groups_(groups), eps_(eps) {
  reset();
}

void ResnetBlock2DImpl::reset() {
  norm1 = register_module("norm1", group_norm(groups_, in_, eps_));
  conv1 = register_module("conv1", conv3x3(in_, out_));
  if (temb_ > 0) time_emb_proj = register_module("time_emb_proj", torch::nn::Linear(temb_, out_));
  norm2 = register_module("norm2", group_norm(groups_, out_, eps_));
  conv2 = register_module("conv2", conv3x3(out_, out_));
  if (in_ != out_) {
    conv_shortcut = register_module("conv_shortcut",
                                    torch::nn::Conv2d(torch::nn::Conv2dOptions(in_, out_, 1)));
  }
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& x, const at::Tensor& temb) {
  at::Tensor h = conv3x3_forward(conv1, at::silu(norm1->forward(x)));
  if (time_emb_proj) {
    CONCORD_CHECK(temb.defined(), "ResnetBlock2D: this block projects a time embedding; none given");
    h = h + time_emb_proj->forward(at::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  } else {
    CONCORD_CHECK(!temb.defined(), "ResnetBlock2D: a time embedding given to a block without time_emb_proj");
  }
  h = conv3x3_forward(conv2, at::silu(norm2->forward(h)));
  const at::Tensor shortcut = conv_shortcut ? conv_shortcut->forward(x) : x;
  return nn::record_output(*this, shortcut + h);
}

// ---- Attention ------------------------------------------------------------------------------

AttentionImpl::AttentionImpl(int64_t dim, int64_t context_dim, int64_t heads)
    : dim_(dim), context_dim_(context_dim), heads_(heads) {
  reset();
}

void AttentionImpl::reset() {
  auto no_bias = [](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
  };
  to_q = register_module("to_q", no_bias(dim_, dim_));
  to_k = register_module("to_k", no_bias(context_dim_, dim_));
  to_v = register_module("to_v", no_bias(context_dim_, dim_));
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(torch::nn::Linear(dim_, dim_));
  to_out->push_back(torch::nn::Dropout(0.0));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const at::Tensor& c = context.defined() ? context : x;
  const int64_t B = x.size(0), Tq = x.size(1), Tk = c.size(1), D = dim_ / heads_;
  auto heads = [&](const at::Tensor& t, int64_t T) { return t.view({B, T, heads_, D}).transpose(1, 2); };
  const at::Tensor q = heads(to_q->forward(x), Tq);
  const at::Tensor k = heads(to_k->forward(c), Tk);
  const at::Tensor v = heads(to_v->forward(c), Tk);
  const at::Tensor o = ops::attention(q, k, v).transpose(1, 2).reshape({B, Tq, dim_});
  return nn::record_output(*this, to_out->ptr<torch::nn::LinearImpl>(0)->forward(o));
}

// ---- GEGLU feed-forward -----------------------------------------------------------------------

GegluFeedForwardImpl::GegluFeedForwardImpl(int64_t dim) : dim_(dim) { reset(); }

void GegluFeedForwardImpl::reset() {
  net = register_module("net", torch::nn::ModuleList());
  net->push_back(GegluProj(dim_, 2 * 4 * dim_));
  net->push_back(torch::nn::Dropout(0.0));
  net->push_back(torch::nn::Linear(4 * dim_, dim_));
}

at::Tensor GegluFeedForwardImpl::forward(const at::Tensor& x) {
  // diffusers' GEGLU: hidden * gelu(gate), the exact (erf) GELU, in one fused pass.
  const at::Tensor h = ops::geglu(net->ptr<GegluProjImpl>(0)->proj->forward(x));
  return nn::record_output(*this, net->ptr<torch::nn::LinearImpl>(2)->forward(h));
}

// ---- BasicTransformerBlock ------------------------------------------------------------------

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads)
    : dim_(dim), context_dim_(context_dim), heads_(heads) {
  reset();
}

void BasicTransformerBlockImpl::reset() {
  auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim_}).eps(1e-5)); };
  norm1 = register_module("norm1", ln());
  attn1 = register_module("attn1", Attention(dim_, dim_, heads_));
  norm2 = register_module("norm2", ln());
  attn2 = register_module("attn2", Attention(dim_, context_dim_, heads_));
  norm3 = register_module("norm3", ln());
  ff = register_module("ff", GegluFeedForward(dim_));
}

at::Tensor BasicTransformerBlockImpl::forward(const at::Tensor& x_in, const at::Tensor& context) {
  at::Tensor x = x_in + attn1->forward(norm1->forward(x_in));
  x = x + attn2->forward(norm2->forward(x), context);
  x = x + ff->forward(norm3->forward(x));
  return nn::record_output(*this, x);
}

// ---- Transformer2DModel ---------------------------------------------------------------------

Transformer2DImpl::Transformer2DImpl(int64_t channels, int64_t heads, int64_t depth,
                                     int64_t context_dim, int64_t groups)
    : channels_(channels), heads_(heads), depth_(depth), context_dim_(context_dim), groups_(groups) {
  reset();
}

void Transformer2DImpl::reset() {
  // diffusers builds the transformer's GroupNorm with eps 1e-6 whatever the U-Net's norm_eps.
  norm = register_module("norm", group_norm(groups_, channels_, 1e-6));
  proj_in = register_module("proj_in", torch::nn::Linear(channels_, channels_));
  transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < depth_; ++i) {
    transformer_blocks->push_back(BasicTransformerBlock(channels_, context_dim_, heads_));
  }
  proj_out = register_module("proj_out", torch::nn::Linear(channels_, channels_));
}

at::Tensor Transformer2DImpl::forward(const at::Tensor& x, const at::Tensor& context) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor h = norm->forward(x).permute({0, 2, 3, 1}).reshape({B, H * W, C});
  h = proj_in->forward(h);
  for (const auto& block : *transformer_blocks) {
    h = block->as<BasicTransformerBlockImpl>()->forward(h, context);
  }
  h = proj_out->forward(h).reshape({B, H, W, C}).permute({0, 3, 1, 2});
  return nn::record_output(*this, h + x);
}

// ---- blocks ---------------------------------------------------------------------------------

UNetBlockImpl::UNetBlockImpl(Spec s, const UNetConfig& config) : spec(s), config_(config) { reset(); }

void UNetBlockImpl::reset() {
  const int64_t temb = config_.time_embed_dim(), groups = config_.norm_num_groups;
  const double eps = config_.norm_eps;
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (spec.cross_attention) attentions = register_module("attentions", torch::nn::ModuleList());
  auto add_transformer = [&] {
    if (spec.cross_attention) {
      attentions->push_back(Transformer2D(spec.out_channels, spec.heads, spec.depth,
                                          config_.cross_attention_dim, groups));
    }
  };
  switch (spec.kind) {
    case Kind::down:
      for (int64_t l = 0; l < spec.layers; ++l) {
        resnets->push_back(ResnetBlock2D(l == 0 ? spec.in_channels : spec.out_channels,
                                         spec.out_channels, temb, groups, eps));
        add_transformer();
      }
      if (spec.resample) {
        downsamplers = register_module("downsamplers", torch::nn::ModuleList());
        downsamplers->push_back(Resample(spec.out_channels, 2));
      }
      break;
    case Kind::mid:
      resnets->push_back(ResnetBlock2D(spec.in_channels, spec.in_channels, temb, groups, eps));
      add_transformer();
      resnets->push_back(ResnetBlock2D(spec.in_channels, spec.in_channels, temb, groups, eps));
      break;
    case Kind::up:
      for (int64_t l = 0; l < spec.layers; ++l) {
        const int64_t skip = l == spec.layers - 1 ? spec.in_channels : spec.out_channels;
        const int64_t in = l == 0 ? spec.prev_output_channels : spec.out_channels;
        resnets->push_back(ResnetBlock2D(in + skip, spec.out_channels, temb, groups, eps));
        add_transformer();
      }
      if (spec.resample) {
        upsamplers = register_module("upsamplers", torch::nn::ModuleList());
        upsamplers->push_back(Resample(spec.out_channels, 1));
      }
      break;
  }
}

at::Tensor UNetBlockImpl::forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& context,
                                  std::vector<at::Tensor>& skips) {
  auto transformer = [&](size_t i, const at::Tensor& h) {
    return spec.cross_attention ? attentions->ptr<Transformer2DImpl>(i)->forward(h, context) : h;
  };
  const size_t n = resnets->size();
  if (spec.kind == Kind::mid) {
    x = resnets->ptr<ResnetBlock2DImpl>(0)->forward(x, temb);
    x = transformer(0, x);
    x = resnets->ptr<ResnetBlock2DImpl>(1)->forward(x, temb);
    return nn::record_output(*this, x);
  }
  for (size_t i = 0; i < n; ++i) {
    if (spec.kind == Kind::up) {
      CONCORD_CHECK(!skips.empty(), "UNet up block: no skip connection left");
      x = at::cat({x, skips.back()}, 1);
      skips.pop_back();
    }
    x = transformer(i, resnets->ptr<ResnetBlock2DImpl>(i)->forward(x, temb));
    if (spec.kind == Kind::down) skips.push_back(x);
  }
  if (downsamplers) {
    x = downsamplers->ptr<ResampleImpl>(0)->conv->forward(x);
    skips.push_back(x);
  }
  if (upsamplers) {
    // Nearest 2x, or to the next skip's size when the input was not a multiple of the U-Net's
    // total downsampling (diffusers' upsample_size).
    auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
    if (!skips.empty()) {
      opts.size(std::vector<int64_t>{skips.back().size(2), skips.back().size(3)});
    } else {
      opts.scale_factor(std::vector<double>{2.0, 2.0});
    }
    x = F::interpolate(x, opts);
    x = conv3x3_forward(upsamplers->ptr<ResampleImpl>(0)->conv, x);
  }
  return nn::record_output(*this, x);
}

// ---- UNet2DConditionModel -------------------------------------------------------------------

UNet2DConditionImpl::UNet2DConditionImpl(UNetConfig c) : config(std::move(c)) {
  config.validate();
  reset();
}

void UNet2DConditionImpl::reset() {
  const auto& c = config;
  const int64_t c0 = c.block_out_channels[0], temb = c.time_embed_dim();
  const size_t n = c.block_out_channels.size();
  conv_in = register_module("conv_in", conv3x3(c.in_channels, c0));
  time_embedding = register_module("time_embedding", TimestepEmbedding(c0, temb));
  if (c.addition_embed_type == "text_time") {
    add_embedding = register_module("add_embedding",
                                    TimestepEmbedding(c.projection_class_embeddings_input_dim, temb));
  }
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t out = c0;
  for (size_t i = 0; i < n; ++i) {
    UNetBlockImpl::Spec s;
    s.kind = UNetBlockImpl::Kind::down;
    s.cross_attention = c.down_block_types[i] == "CrossAttnDownBlock2D";
    s.in_channels = out;
    s.out_channels = out = c.block_out_channels[i];
    s.layers = c.layers_per_block[i];
    s.depth = c.transformer_layers_per_block[i];
    s.heads = c.num_attention_heads[i];
    s.resample = i + 1 < n;
    down_blocks->push_back(UNetBlock(s, c));
  }
  if (!c.mid_block_type.empty()) {
    UNetBlockImpl::Spec s;
    s.kind = UNetBlockImpl::Kind::mid;
    s.cross_attention = true;
    s.in_channels = s.out_channels = c.block_out_channels.back();
    s.depth = c.transformer_layers_per_block.back();
    s.heads = c.num_attention_heads.back();
    mid_block = register_module("mid_block", UNetBlock(s, c));
  }
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  const std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  const std::vector<int64_t> rev_layers(c.layers_per_block.rbegin(), c.layers_per_block.rend());
  const std::vector<int64_t> rev_heads(c.num_attention_heads.rbegin(), c.num_attention_heads.rend());
  out = rev[0];
  for (size_t i = 0; i < n; ++i) {
    UNetBlockImpl::Spec s;
    s.kind = UNetBlockImpl::Kind::up;
    s.cross_attention = c.up_block_types[i] == "CrossAttnUpBlock2D";
    s.prev_output_channels = out;
    s.out_channels = out = rev[i];
    s.in_channels = rev[std::min(i + 1, n - 1)];
    s.layers = rev_layers[i] + 1;
    s.depth = c.reverse_transformer_layers_per_block[i];
    s.heads = rev_heads[i];
    s.resample = i + 1 < n;
    up_blocks->push_back(UNetBlock(s, c));
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, c0, c.norm_eps));
  conv_out = register_module("conv_out", conv3x3(c0, c.out_channels));
}

at::Tensor UNet2DConditionImpl::forward(const UNetInputs& in) {
  const auto& c = config;
  const at::Tensor& x0 = in.sample;
  CONCORD_CHECK(x0.dim() == 4 && x0.size(1) == c.in_channels, "UNet: sample must be [B, ",
                c.in_channels, ", H, W], got ", x0.sizes());
  const int64_t B = x0.size(0);
  CONCORD_CHECK(in.encoder_hidden_states.defined() && in.encoder_hidden_states.dim() == 3 &&
                    in.encoder_hidden_states.size(2) == c.cross_attention_dim,
                "UNet: encoder_hidden_states must be [B, L, ", c.cross_attention_dim, "]");
  at::Tensor t = in.timesteps.to(x0.device());
  if (t.dim() == 0 || t.numel() == 1) t = t.reshape({1}).expand({B});
  at::Tensor emb = timestep_embedding(t, c.block_out_channels[0], c.flip_sin_to_cos, c.freq_shift)
                       .to(x0.scalar_type());
  emb = time_embedding->forward(emb);
  if (add_embedding) {
    CONCORD_CHECK(in.text_embeds.defined() && in.time_ids.defined(),
                  "UNet: SDXL's text_time conditioning needs text_embeds and time_ids");
    const at::Tensor time_embeds =
        timestep_embedding(in.time_ids.flatten(), c.addition_time_embed_dim, c.flip_sin_to_cos,
                           c.freq_shift)
            .reshape({B, -1})
            .to(x0.scalar_type());
    const at::Tensor add = at::cat({in.text_embeds.to(x0.scalar_type()), time_embeds}, -1);
    CONCORD_CHECK(add.size(1) == c.projection_class_embeddings_input_dim, "UNet: text_embeds (",
                  in.text_embeds.size(-1), ") + 6 time ids x ", c.addition_time_embed_dim,
                  " must give projection_class_embeddings_input_dim ",
                  c.projection_class_embeddings_input_dim);
    emb = emb + add_embedding->forward(add);
  }
  const at::Tensor& ctx = in.encoder_hidden_states;
  at::Tensor x = nn::record_output(*conv_in, conv3x3_forward(conv_in, x0));
  std::vector<at::Tensor> skips{x};
  for (const auto& block : *down_blocks) x = block->as<UNetBlockImpl>()->forward(x, emb, ctx, skips);
  if (mid_block) x = mid_block->forward(x, emb, ctx, skips);
  for (const auto& block : *up_blocks) x = block->as<UNetBlockImpl>()->forward(x, emb, ctx, skips);
  x = conv3x3_forward(conv_out, at::silu(conv_norm_out->forward(x)));
  return nn::record_output(*this, x);
}

int64_t UNet2DConditionImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

}  // namespace concord::diffusion
