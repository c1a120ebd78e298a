#include "concord/diffusion/vae.h"

#include <regex>

#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/dropout.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/nn/feature_capture.h"
#include "concord/ops/attention.h"
#include "conv_layers.h"

namespace concord::diffusion {

namespace F = torch::nn::functional;
using detail::conv1x1;
using detail::conv3x3;
using detail::conv3x3_forward;
using detail::group_norm;

namespace {

// diffusers' VAE blocks build their norms with eps 1e-6.
constexpr double kEps = 1e-6;

// The holder that gives diffusers' path "downsamplers.0.conv" / "upsamplers.0.conv".
class VAEResampleImpl : public torch::nn::Cloneable<VAEResampleImpl> {
 public:
  VAEResampleImpl(int64_t channels, bool down) : channels_(channels), down_(down) { reset(); }
  void reset() override {
    // Downsample2D(padding=0): the input is padded (0, 1, 0, 1) before an unpadded stride-2 conv.
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels_, channels_, 3)
                                                         .stride(down_ ? 2 : 1)
                                                         .padding(down_ ? 0 : 1)));
  }
  torch::nn::Conv2d conv{nullptr};

 private:
  int64_t channels_;
  bool down_;
};
TORCH_MODULE(VAEResample);

// The per-channel [1, C, 1, 1] view of a config list, in x's dtype and on its device.
at::Tensor channel_view(const std::vector<double>& values, const at::Tensor& x) {
  return at::tensor(values, at::TensorOptions().dtype(at::kDouble))
      .to(x.device(), x.scalar_type())
      .view({1, -1, 1, 1});
}

bool uses_latent_stats(const AutoencoderKLConfig& c) {
  CONCORD_CHECK(!(c.latents_mean && c.latents_std && c.shift_factor),
                "VAE latents: the config sets latents_mean/latents_std and shift_factor; diffusers "
                "has no rule for both (SDXL's pipeline reads only the first, SD3's only the second)");
  return c.latents_mean && c.latents_std;
}

void check_latents(const AutoencoderKLConfig& c, const at::Tensor& z, const char* what) {
  CONCORD_CHECK(z.dim() == 4 && z.size(1) == c.latent_channels, what, ": latents must be [B, ",
                c.latent_channels, ", h, w], got ", z.sizes());
}

}  // namespace

// ---- DiagonalGaussian -----------------------------------------------------------------------

at::Tensor DiagonalGaussian::sample(c10::optional<at::Generator> generator) const {
  const at::Tensor eps = at::randn(mean.sizes(), std::move(generator), mean.options());
  return mean + std * eps;
}

at::Tensor DiagonalGaussian::kl() const {
  return 0.5 * (mean.pow(2) + at::exp(logvar) - 1.0 - logvar).sum({1, 2, 3});
}

// ---- attention ------------------------------------------------------------------------------

VAEAttentionImpl::VAEAttentionImpl(int64_t channels, int64_t groups, double eps)
    : channels_(channels), groups_(groups), eps_(eps) {
  reset();
}

void VAEAttentionImpl::reset() {
  group_norm = register_module(
      "group_norm", torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups_, channels_).eps(eps_)));
  to_q = register_module("to_q", torch::nn::Linear(channels_, channels_));
  to_k = register_module("to_k", torch::nn::Linear(channels_, channels_));
  to_v = register_module("to_v", torch::nn::Linear(channels_, channels_));
  to_out = register_module("to_out", torch::nn::ModuleList());
  to_out->push_back(torch::nn::Linear(channels_, channels_));
  to_out->push_back(torch::nn::Dropout(0.0));
}

at::Tensor VAEAttentionImpl::forward(const at::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  // [B, C, H, W] -> [B, HW, C] tokens; one head of dimension C: [B, 1, HW, C].
  const at::Tensor h = group_norm->forward(x).view({B, C, H * W}).transpose(1, 2);
  const at::Tensor q = to_q->forward(h).unsqueeze(1);
  const at::Tensor k = to_k->forward(h).unsqueeze(1);
  const at::Tensor v = to_v->forward(h).unsqueeze(1);
  const at::Tensor o = to_out->ptr<torch::nn::LinearImpl>(0)->forward(ops::attention(q, k, v).squeeze(1));
  return nn::record_output(*this, o.transpose(1, 2).reshape({B, C, H, W}) + x);
}

// ---- mid block ------------------------------------------------------------------------------

VAEMidBlockImpl::VAEMidBlockImpl(int64_t channels, int64_t groups, bool attention)
    : channels_(channels), groups_(groups), attention_(attention) {
  reset();
}

void VAEMidBlockImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  resnets->push_back(ResnetBlock2D(channels_, channels_, 0, groups_, kEps));
  resnets->push_back(ResnetBlock2D(channels_, channels_, 0, groups_, kEps));
  if (attention_) {
    attentions = register_module("attentions", torch::nn::ModuleList());
    attentions->push_back(VAEAttention(channels_, groups_, kEps));
  }
}

at::Tensor VAEMidBlockImpl::forward(const at::Tensor& x) {
  at::Tensor h = resnets->ptr<ResnetBlock2DImpl>(0)->forward(x);
  if (attentions) h = attentions->ptr<VAEAttentionImpl>(0)->forward(h);
  return nn::record_output(*this, resnets->ptr<ResnetBlock2DImpl>(1)->forward(h));
}

// ---- down / up blocks -----------------------------------------------------------------------

VAEBlockImpl::VAEBlockImpl(Kind kind, int64_t in, int64_t out, int64_t layers, int64_t groups,
                           bool resample)
    : kind_(kind), in_(in), out_(out), layers_(layers), groups_(groups), resample_(resample) {
  reset();
}

void VAEBlockImpl::reset() {
  resnets = register_module("resnets", torch::nn::ModuleList());
  for (int64_t l = 0; l < layers_; ++l) {
    resnets->push_back(ResnetBlock2D(l == 0 ? in_ : out_, out_, 0, groups_, kEps));
  }
  if (!resample_) return;
  torch::nn::ModuleList& holder = kind_ == Kind::down ? downsamplers : upsamplers;
  holder = register_module(kind_ == Kind::down ? "downsamplers" : "upsamplers", torch::nn::ModuleList());
  holder->push_back(VAEResample(out_, kind_ == Kind::down));
}

at::Tensor VAEBlockImpl::forward(at::Tensor x) {
  for (const auto& resnet : *resnets) x = resnet->as<ResnetBlock2DImpl>()->forward(x);
  if (downsamplers) {
    x = at::constant_pad_nd(x, {0, 1, 0, 1}, 0);
    x = downsamplers->ptr<VAEResampleImpl>(0)->conv->forward(x);
  }
  if (upsamplers) {
    // Upsample2D interpolates bf16 in fp32 (upsample_nearest2d lacked bf16 kernels).
    const bool bf16 = x.scalar_type() == at::kBFloat16;
    at::Tensor up = F::interpolate(bf16 ? x.to(at::kFloat) : x,
                                   F::InterpolateFuncOptions()
                                       .mode(torch::kNearest)
                                       .scale_factor(std::vector<double>{2.0, 2.0}));
    if (bf16) up = up.to(at::kBFloat16);
    x = conv3x3_forward(upsamplers->ptr<VAEResampleImpl>(0)->conv, up);
  }
  return nn::record_output(*this, x);
}

// ---- encoder / decoder ----------------------------------------------------------------------

VAEEncoderImpl::VAEEncoderImpl(AutoencoderKLConfig config) : config_(std::move(config)) { reset(); }

void VAEEncoderImpl::reset() {
  const auto& c = config_;
  const auto& ch = c.block_out_channels;
  conv_in = register_module("conv_in", conv3x3(c.in_channels, ch[0]));
  down_blocks = register_module("down_blocks", torch::nn::ModuleList());
  int64_t prev = ch[0];
  for (size_t i = 0; i < ch.size(); ++i) {
    down_blocks->push_back(VAEBlock(VAEBlockImpl::Kind::down, prev, ch[i], c.layers_per_block,
                                    c.norm_num_groups, i + 1 < ch.size()));
    prev = ch[i];
  }
  mid_block = register_module("mid_block", VAEMidBlock(ch.back(), c.norm_num_groups,
                                                       c.mid_block_add_attention));
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, ch.back(), kEps));
  conv_out = register_module("conv_out", conv3x3(ch.back(), 2 * c.latent_channels));
}

at::Tensor VAEEncoderImpl::forward(const at::Tensor& x) {
  at::Tensor h = conv3x3_forward(conv_in, x);
  for (const auto& block : *down_blocks) h = block->as<VAEBlockImpl>()->forward(h);
  h = mid_block->forward(h);
  return nn::record_output(*this, conv3x3_forward(conv_out, at::silu(conv_norm_out->forward(h))));
}

VAEDecoderImpl::VAEDecoderImpl(AutoencoderKLConfig config) : config_(std::move(config)) { reset(); }

void VAEDecoderImpl::reset() {
  const auto& c = config_;
  const auto& ch = c.block_out_channels;
  const size_t n = ch.size();
  conv_in = register_module("conv_in", conv3x3(c.latent_channels, ch.back()));
  mid_block = register_module("mid_block", VAEMidBlock(ch.back(), c.norm_num_groups,
                                                       c.mid_block_add_attention));
  up_blocks = register_module("up_blocks", torch::nn::ModuleList());
  int64_t prev = ch.back();
  for (size_t i = 0; i < n; ++i) {
    const int64_t width = ch[n - 1 - i];
    up_blocks->push_back(VAEBlock(VAEBlockImpl::Kind::up, prev, width, c.layers_per_block + 1,
                                  c.norm_num_groups, i + 1 < n));
    prev = width;
  }
  conv_norm_out = register_module("conv_norm_out", group_norm(c.norm_num_groups, ch[0], kEps));
  conv_out = register_module("conv_out", conv3x3(ch[0], c.out_channels));
}

at::Tensor VAEDecoderImpl::forward(const at::Tensor& z) {
  at::Tensor h = mid_block->forward(conv3x3_forward(conv_in, z));
  for (const auto& block : *up_blocks) h = block->as<VAEBlockImpl>()->forward(h);
  return nn::record_output(*this, conv3x3_forward(conv_out, at::silu(conv_norm_out->forward(h))));
}

// ---- AutoencoderKL --------------------------------------------------------------------------

AutoencoderKLImpl::AutoencoderKLImpl(AutoencoderKLConfig c) : config(std::move(c)) {
  config.validate();
  reset();
}

void AutoencoderKLImpl::reset() {
  encoder = register_module("encoder", VAEEncoder(config));
  decoder = register_module("decoder", VAEDecoder(config));
  const int64_t L = config.latent_channels;
  if (config.use_quant_conv) quant_conv = register_module("quant_conv", conv1x1(2 * L, 2 * L));
  if (config.use_post_quant_conv) post_quant_conv = register_module("post_quant_conv", conv1x1(L, L));
}

DiagonalGaussian AutoencoderKLImpl::encode(const at::Tensor& image) {
  const int64_t f = config.downsampling_factor();
  CONCORD_CHECK(image.dim() == 4 && image.size(1) == config.in_channels, "AutoencoderKL::encode: image must be [B, ",
                config.in_channels, ", H, W], got ", image.sizes());
  CONCORD_CHECK(image.size(2) % f == 0 && image.size(3) % f == 0, "AutoencoderKL::encode: H and W must be multiples of ",
                f, ", got ", image.sizes());
  at::Tensor moments = encoder->forward(image);
  if (quant_conv) moments = quant_conv->forward(moments);
  const auto parts = moments.chunk(2, 1);
  DiagonalGaussian q;
  q.mean = parts[0];
  q.logvar = at::clamp(parts[1], -30.0, 20.0);
  q.std = at::exp(0.5 * q.logvar);
  return q;
}

at::Tensor AutoencoderKLImpl::decode(const at::Tensor& z) {
  check_latents(config, z, "AutoencoderKL::decode");
  return decoder->forward(post_quant_conv ? post_quant_conv->forward(z) : z);
}

at::Tensor AutoencoderKLImpl::forward(const at::Tensor& image, bool sample_posterior,
                                      c10::optional<at::Generator> generator) {
  const DiagonalGaussian q = encode(image);
  return decode(sample_posterior ? q.sample(std::move(generator)) : q.mean);
}

int64_t AutoencoderKLImpl::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

// ---- latent normalisation -------------------------------------------------------------------

at::Tensor normalize_latents(const AutoencoderKLConfig& c, const at::Tensor& z) {
  check_latents(c, z, "normalize_latents");
  if (uses_latent_stats(c)) {
    return (z - channel_view(*c.latents_mean, z)) * c.scaling_factor / channel_view(*c.latents_std, z);
  }
  if (c.shift_factor) return (z - *c.shift_factor) * c.scaling_factor;
  return z * c.scaling_factor;
}

at::Tensor denormalize_latents(const AutoencoderKLConfig& c, const at::Tensor& latents) {
  check_latents(c, latents, "denormalize_latents");
  if (uses_latent_stats(c)) {
    return latents * channel_view(*c.latents_std, latents) / c.scaling_factor +
           channel_view(*c.latents_mean, latents);
  }
  if (c.shift_factor) return latents / c.scaling_factor + *c.shift_factor;
  return latents / c.scaling_factor;
}

namespace {
at::TensorOptions model_options(AutoencoderKL& vae) {
  const at::Tensor p = vae->encoder->conv_in->weight;
  return p.options();
}
}  // namespace

at::Tensor latents_from_image(AutoencoderKL vae, const at::Tensor& image, PosteriorDraw draw,
                              c10::optional<at::Generator> generator) {
  return translate_torch_errors("diffusion::latents_from_image", [&] {
    const auto opts = model_options(vae);
    const DiagonalGaussian q = vae->encode(image.to(opts.device(), opts.dtype()));
    const at::Tensor z = draw == PosteriorDraw::sample ? q.sample(std::move(generator)) : q.mean;
    return normalize_latents(vae->config, z);
  });
}

at::Tensor image_from_latents(AutoencoderKL vae, const at::Tensor& latents) {
  return translate_torch_errors("diffusion::image_from_latents", [&] {
    const auto opts = model_options(vae);
    return vae->decode(denormalize_latents(vae->config, latents.to(opts.device(), opts.dtype())));
  });
}

// ---- checkpoints ----------------------------------------------------------------------------

std::string vae_legacy_tensor_name(const std::string& name) {
  static const std::regex legacy(R"(^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)\.(weight|bias)$)");
  std::smatch m;
  if (!std::regex_match(name, m, legacy)) return name;
  const std::string part = m[2];
  const char* now = part == "query" ? "to_q" : part == "key" ? "to_k" : part == "value" ? "to_v" : "to_out.0";
  return m[1].str() + now + "." + m[3].str();
}

AutoencoderKL load_vae(const std::filesystem::path& folder, const ComponentLoadOptions& options) {
  return translate_torch_errors("diffusion::load_vae " + folder.string(), [&] {
    const AutoencoderKLConfig config = load_vae_config(folder);
    const ComponentWeights weights(folder, kDiffusersWeightsPrefix, vae_legacy_tensor_name);
    AutoencoderKL model(config);
    load_component_weights(*model, weights, options, "VAE");
    model->eval();
    return model;
  });
}

void save_vae(AutoencoderKL model, const std::filesystem::path& folder, uint64_t max_shard_bytes) {
  save_component_weights(*model, folder, kDiffusersWeightsPrefix, max_shard_bytes);
  write_file_atomic(folder / "config.json", vae_config_to_json(model->config).dump(2) + "\n");
}

}  // namespace concord::diffusion
