#include "concord/diffusion/sdxl_pipeline.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <ATen/CPUGeneratorImpl.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/diffusion/unet_checkpoint.h"

namespace concord::diffusion {

namespace fs = std::filesystem;

namespace {

// model_index.json: which components the folder holds ([library, class] or [null, null]).
struct ModelIndex {
  bool force_zeros_for_empty_prompt = true;
};

ModelIndex read_model_index(const fs::path& folder) {
  const fs::path file = folder / "model_index.json";
  const Json j = load_json_file(file);
  const std::string where = file.string();
  if (!j.is_object()) fail_format(where, "expected a JSON object");
  const std::string cls = j.value("_class_name", std::string());
  if (cls != "StableDiffusionXLPipeline") {
    fail_config(where, "key '_class_name': '", cls, "' is not StableDiffusionXLPipeline");
  }
  auto expect = [&](const char* key, const char* wanted, bool optional) {
    auto it = j.find(key);
    const bool absent = it == j.end() || !it->is_array() || it->size() != 2 || (*it)[1].is_null();
    if (absent) {
      if (!optional) fail_config(where, "key '", key, "' is missing (", wanted, " expected)");
      return;
    }
    const std::string got = (*it)[1].is_string() ? (*it)[1].get<std::string>() : "";
    if (got != wanted) {
      fail_config(where, "key '", key, "': '", got, "' is not supported (", wanted, ")");
    }
  };
  expect("unet", "UNet2DConditionModel", false);
  expect("vae", "AutoencoderKL", false);
  expect("text_encoder", "CLIPTextModel", true);
  expect("text_encoder_2", "CLIPTextModelWithProjection", false);
  expect("scheduler", "EulerDiscreteScheduler", false);
  ModelIndex index;
  if (auto it = j.find("force_zeros_for_empty_prompt"); it != j.end() && it->is_boolean()) {
    index.force_zeros_for_empty_prompt = it->get<bool>();
  }
  return index;
}

// Lin et al. 2023, Eq. 15-16: rescale the guided prediction to the conditional one's spread.
at::Tensor rescale_guidance(const at::Tensor& guided_eps, const at::Tensor& cond, double phi) {
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < guided_eps.dim(); ++d) dims.push_back(d);
  const at::Tensor std_cond = cond.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  const at::Tensor std_cfg = guided_eps.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  const at::Tensor rescaled = guided_eps * (std_cond / std_cfg);
  return phi * rescaled + (1.0 - phi) * guided_eps;
}

at::Tensor repeat_rows(const at::Tensor& t, int64_t times) {
  return times == 1 ? t : t.repeat_interleave(times, 0);
}

}  // namespace

SdxlPipeline::SdxlPipeline(SdxlTextEncoders text, UNet2DCondition unet, AutoencoderKL vae,
                           EulerOptions scheduler, bool force_zeros_for_empty_prompt)
    : text_(std::move(text)),
      vae_(std::move(vae)),
      scheduler_(std::move(scheduler)),
      force_zeros_(force_zeros_for_empty_prompt) {
  set_unet(std::move(unet));
}

SdxlPipeline SdxlPipeline::load(const fs::path& folder, const SdxlLoadOptions& options) {
  return translate_torch_errors("diffusion::SdxlPipeline::load " + folder.string(), [&] {
    const ModelIndex index = read_model_index(folder);
    const ComponentLoadOptions& c = options.components;
    UNetLoadOptions unet_options;
    if (c.dtype) unet_options.dtype = *c.dtype;
    if (c.device) unet_options.device = *c.device;
    const fs::path unet_folder = options.unet.empty() ? folder / "unet" : options.unet;
    return SdxlPipeline(SdxlTextEncoders::load(folder, c), load_unet(unet_folder, unet_options),
                        load_vae(folder / "vae", c), load_euler_options(folder / "scheduler"),
                        index.force_zeros_for_empty_prompt);
  });
}

void SdxlPipeline::check_compatible(const UNet2DCondition& unet) const {
  const UNetConfig& u = unet->config;
  CONCORD_CHECK(u.cross_attention_dim == text_.embed_dim(), "SDXL pipeline: the U-Net's "
                "cross_attention_dim is ", u.cross_attention_dim, " but the text encoders give ",
                text_.embed_dim());
  CONCORD_CHECK(u.addition_embed_type == "text_time", "SDXL pipeline: the U-Net has no "
                "text_time conditioning (addition_embed_type '", u.addition_embed_type, "')");
  const int64_t passed = 6 * u.addition_time_embed_dim + text_.projection_dim();
  CONCORD_CHECK(u.projection_class_embeddings_input_dim == passed, "SDXL pipeline: the U-Net "
                "expects an added embedding of ", u.projection_class_embeddings_input_dim,
                ", the text encoders and time ids give ", passed);
  CONCORD_CHECK(u.in_channels == vae_->config.latent_channels, "SDXL pipeline: the U-Net reads ",
                u.in_channels, " channels, the VAE's latents have ", vae_->config.latent_channels);
}

void SdxlPipeline::set_unet(UNet2DCondition unet) {
  check_compatible(unet);
  unet_ = std::move(unet);
}

int64_t SdxlPipeline::vae_scale_factor() const {
  return int64_t{1} << (static_cast<int64_t>(vae_->config.block_out_channels.size()) - 1);
}

int64_t SdxlPipeline::default_height() const {
  return unet_->config.sample_size * vae_scale_factor();
}

at::Tensor SdxlPipeline::initial_noise(int64_t n, int64_t height, int64_t width,
                                       uint64_t seed) const {
  const int64_t f = vae_scale_factor();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const at::Tensor noise =
      at::randn({n, unet_->config.in_channels, height / f, width / f}, gen, at::kFloat);
  const at::Tensor p = unet_->parameters().front();
  return noise.to(p.device(), p.scalar_type());
}

at::Tensor SdxlPipeline::decode(const at::Tensor& latents) {
  torch::NoGradGuard no_grad;
  const at::Tensor p = vae_->parameters().front();
  // diffusers upcasts an fp16 VAE that says force_upcast (SDXL's overflows in fp16).
  const bool upcast = p.scalar_type() == at::kHalf && vae_->config.force_upcast;
  AutoencoderKL vae = vae_;
  if (upcast) {
    if (!vae_fp32_) {
      vae_fp32_ = std::dynamic_pointer_cast<AutoencoderKLImpl>(vae_->clone());
      vae_fp32_->to(at::kFloat);
    }
    vae = vae_fp32_;
  }
  const at::Tensor image = image_from_latents(vae, latents);
  return (image.to(at::kFloat) / 2 + 0.5).clamp(0, 1);
}

SdxlGeneration SdxlPipeline::generate(const std::vector<std::string>& prompts,
                                      const SdxlGenerateOptions& o, const at::Tensor& noise,
                                      bool decode_images,
                                      const std::function<void(int64_t, int64_t)>& on_step) {
  CONCORD_CHECK(!prompts.empty(), "SDXL pipeline: no prompts");
  CONCORD_CHECK(o.num_inference_steps >= 1, "SDXL pipeline: num_inference_steps must be >= 1");
  CONCORD_CHECK(o.images_per_prompt >= 1, "SDXL pipeline: images_per_prompt must be >= 1");
  torch::NoGradGuard no_grad;
  const int64_t height = o.height > 0 ? o.height : default_height();
  const int64_t width = o.width > 0 ? o.width : default_height();
  const int64_t f = vae_scale_factor();
  CONCORD_CHECK(height % f == 0 && width % f == 0, "SDXL pipeline: height and width must be "
                "multiples of ", f, ", got ", height, "x", width);
  const int64_t n = static_cast<int64_t>(prompts.size()) * o.images_per_prompt;
  const bool cfg = o.guidance_scale > 1.0;
  const at::Tensor p = unet_->parameters().front();
  const auto dtype = p.scalar_type();
  const auto device = p.device();

  SdxlGeneration out;
  out.prompt = text_.encode(prompts, o.clip_skip);
  at::Tensor context = repeat_rows(out.prompt.embeds, o.images_per_prompt);
  at::Tensor pooled = repeat_rows(out.prompt.pooled, o.images_per_prompt);
  if (cfg) {
    const bool zeros = !o.negative_prompt && force_zeros_;
    out.negative = text_.encode_negative(o.negative_prompt.value_or(std::vector<std::string>{}),
                                         out.prompt, zeros);
    context = at::cat({repeat_rows(out.negative.embeds, o.images_per_prompt), context});
    pooled = at::cat({repeat_rows(out.negative.pooled, o.images_per_prompt), pooled});
  }
  auto or_size = [&](const std::array<int64_t, 2>& s) {
    return s[0] > 0 ? s : std::array<int64_t, 2>{height, width};
  };
  const auto original = or_size(o.original_size), target = or_size(o.target_size);
  out.add_time_ids = at::tensor({original[0], original[1], o.crop_top_left[0],
                                 o.crop_top_left[1], target[0], target[1]}, at::kFloat);
  const int64_t rows = cfg ? 2 * n : n;
  UNetInputs in;
  in.encoder_hidden_states = context.to(device, dtype);
  in.text_embeds = pooled.to(device, dtype);
  in.time_ids = out.add_time_ids.to(device, dtype).unsqueeze(0).expand({rows, 6}).contiguous();

  EulerOptions scheduler = scheduler_;
  if (!o.timestep_spacing.empty()) scheduler.timestep_spacing = o.timestep_spacing;
  const EulerSampler sampler(scheduler, o.num_inference_steps);
  out.timesteps = sampler.timesteps();
  out.sigmas = sampler.sigmas();

  at::Tensor x = noise.defined() ? noise : initial_noise(n, height, width, o.seed);
  const std::vector<int64_t> want = {n, unet_->config.in_channels, height / f, width / f};
  CONCORD_CHECK(x.sizes().vec() == want, "SDXL pipeline: initial noise has shape ", x.sizes(),
                ", expected ", at::IntArrayRef(want));
  // The scheduler works in fp32 (diffusers upcasts the sample in step()).
  x = x.to(device, at::kFloat) * sampler.init_noise_sigma();
  const int64_t steps = sampler.timesteps().size(0);
  for (int64_t i = 0; i < steps; ++i) {
    const at::Tensor model_in = sampler.scale_model_input(cfg ? at::cat({x, x}) : x, i);
    in.sample = model_in.to(dtype);
    in.timesteps = sampler.timesteps()[i].expand({rows}).to(device, at::kFloat);
    at::Tensor eps = unet_->forward(in).to(at::kFloat);
    if (cfg) {
      const auto halves = eps.chunk(2);
      eps = guided(halves[0], halves[1], o.guidance_scale);
      if (o.guidance_rescale > 0) eps = rescale_guidance(eps, halves[1], o.guidance_rescale);
    }
    x = sampler.step(eps, i, x);
    if (on_step) on_step(i + 1, steps);
  }
  out.latents = x;
  if (decode_images) out.images = decode(x);
  return out;
}

}  // namespace concord::diffusion
