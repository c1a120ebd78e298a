// The conditional U-Net of Stable Diffusion XL and of the KOALA students (KOALA, arXiv
// 2312.04005), module for module as diffusers' UNet2DConditionModel builds it, with the
// same module names: a diffusers `diffusion_pytorch_model.safetensors` maps onto
// named_parameters() one to one (unet_checkpoint.h), and nn::FeatureCapture reads a feature by
// the path diffusers code would hook ("down_blocks.1.attentions.0.transformer_blocks.0.attn1").
//
//   eps = UNet(x_t, t, c):  t -> sinusoidal embedding -> MLP (+ SDXL's text_time embedding of the
//   pooled text embedding and the six size/crop ids);  x_t -> conv_in -> down blocks (ResNets
//   with the time embedding, transformers attending to c) -> mid block -> up blocks (each ResNet
//   reads a skip connection) -> GroupNorm, SiLU, conv_out.
//
// Attention runs on ops::attention (non-causal; self-attention Tq = Tk = HW, cross-attention
// Tk = the text length), so its CPU and CUDA kernels serve the U-Net as they serve the LMs.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "concord/diffusion/unet_config.h"

namespace concord::diffusion {

/// Sinusoidal timestep embedding [B, dim] (diffusers' get_timestep_embedding): frequencies
/// exp(-ln(10000) i / (dim/2 - freq_shift)), [sin, cos] or, flipped, [cos, sin].
at::Tensor timestep_embedding(const at::Tensor& timesteps, int64_t dim, bool flip_sin_to_cos,
                              int64_t freq_shift);

/// linear_1 -> SiLU -> linear_2.
class TimestepEmbeddingImpl : public torch::nn::Cloneable<TimestepEmbeddingImpl> {
 public:
  TimestepEmbeddingImpl(int64_t in, int64_t out);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  torch::nn::Linear linear_1{nullptr}, linear_2{nullptr};

 private:
  int64_t in_, out_;
};
TORCH_MODULE(TimestepEmbedding);

/// ResnetBlock2D: GroupNorm, SiLU, 3x3 conv, + the projected time embedding, GroupNorm, SiLU,
/// 3x3 conv, + the (1x1-conv'd when the width changes) input. `temb` 0 is diffusers'
/// temb_channels=None (the VAE's blocks): no time_emb_proj, and forward takes no embedding.
class ResnetBlock2DImpl : public torch::nn::Cloneable<ResnetBlock2DImpl> {
 public:
  ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb = {});
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};

 private:
  int64_t in_, out_, temb_, groups_;
  double eps_;
};
TORCH_MODULE(ResnetBlock2D);

/// diffusers' Attention: to_q/to_k/to_v without bias, to_out.0 with one; heads of dim/heads.
/// Self-attention when `context` is undefined.
class AttentionImpl : public torch::nn::Cloneable<AttentionImpl> {
 public:
  AttentionImpl(int64_t dim, int64_t context_dim, int64_t heads);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context = {});
  torch::nn::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  ///< [Linear, Dropout] as diffusers ("to_out.0")

 private:
  int64_t dim_, context_dim_, heads_;
};
TORCH_MODULE(Attention);

/// GEGLU feed-forward: net.0.proj (d -> 2 * 4d), hidden * gelu(gate), net.2 (4d -> d).
class GegluFeedForwardImpl : public torch::nn::Cloneable<GegluFeedForwardImpl> {
 public:
  explicit GegluFeedForwardImpl(int64_t dim);
  void reset() override;
  at::Tensor forward(const at::Tensor& x);
  /// [GEGLU holder with .proj, Dropout, Linear]. forward() reads its layers from here on every
  /// call: a holder member aliasing them would keep pointing at reset()'s modules after
  /// clone() replaces the list's contents with the copies.
  torch::nn::ModuleList net{nullptr};

 private:
  int64_t dim_;
};
TORCH_MODULE(GegluFeedForward);

/// BasicTransformerBlock: x + attn1(norm1 x); x + attn2(norm2 x, c); x + ff(norm3 x).
class BasicTransformerBlockImpl : public torch::nn::Cloneable<BasicTransformerBlockImpl> {
 public:
  BasicTransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
  Attention attn1{nullptr}, attn2{nullptr};
  GegluFeedForward ff{nullptr};

 private:
  int64_t dim_, context_dim_, heads_;
};
TORCH_MODULE(BasicTransformerBlock);

/// Transformer2DModel with linear projections: GroupNorm, [B, C, H, W] -> [B, HW, C], proj_in,
/// `depth` transformer blocks, proj_out, back to [B, C, H, W], + the input.
class Transformer2DImpl : public torch::nn::Cloneable<Transformer2DImpl> {
 public:
  Transformer2DImpl(int64_t channels, int64_t heads, int64_t depth, int64_t context_dim,
                    int64_t groups);
  void reset() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& context);
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear proj_in{nullptr}, proj_out{nullptr};
  torch::nn::ModuleList transformer_blocks{nullptr};

 private:
  int64_t channels_, heads_, depth_, context_dim_, groups_;
};
TORCH_MODULE(Transformer2D);

/// One down, mid or up block: ResNets, optional transformers, optional down/upsampler.
class UNetBlockImpl : public torch::nn::Cloneable<UNetBlockImpl> {
 public:
  enum class Kind { down, mid, up };
  struct Spec {
    Kind kind = Kind::down;
    bool cross_attention = false;
    int64_t in_channels = 0, out_channels = 0;
    int64_t prev_output_channels = 0;  ///< up blocks
    int64_t layers = 1, depth = 1, heads = 1;
    bool resample = false;             ///< downsampler (down) / upsampler (up)
  };
  UNetBlockImpl(Spec spec, const UNetConfig& config);
  void reset() override;
  /// Down: returns x and appends each ResNet(+transformer) output and the downsampled output to
  /// `skips`. Up: takes its skips from the end of `skips`. Mid: neither.
  at::Tensor forward(at::Tensor x, const at::Tensor& temb, const at::Tensor& context,
                     std::vector<at::Tensor>& skips);
  Spec spec;
  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
  torch::nn::ModuleList downsamplers{nullptr}, upsamplers{nullptr};  ///< [holder with .conv]

 private:
  UNetConfig config_;
};
TORCH_MODULE(UNetBlock);

/// Inputs of one forward pass.
struct UNetInputs {
  at::Tensor sample;                 ///< x_t [B, C_in, H, W]
  at::Tensor timesteps;              ///< [B] (or one value for all)
  at::Tensor encoder_hidden_states;  ///< c [B, L, cross_attention_dim]
  at::Tensor text_embeds;            ///< SDXL: pooled text embedding [B, E]
  at::Tensor time_ids;               ///< SDXL: [B, 6] original size, crop, target size
};

class UNet2DConditionImpl : public torch::nn::Cloneable<UNet2DConditionImpl> {
 public:
  explicit UNet2DConditionImpl(UNetConfig config);
  void reset() override;
  /// The prediction [B, C_out, H, W] (noise, or v, as the model was trained).
  at::Tensor forward(const UNetInputs& in);
  int64_t num_parameters() const;

  UNetConfig config;
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  TimestepEmbedding time_embedding{nullptr}, add_embedding{nullptr};
  torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
  UNetBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
};
TORCH_MODULE(UNet2DCondition);

}  // namespace concord::diffusion
