// SDXL's VAE (diffusers' AutoencoderKL) against diffusers 0.42.1: the posterior and decoded images
// of a tiny SDXL-shaped VAE (fixtures from scripts/fixtures/make_sdxl_pipeline_fixtures.py),
// SDXL's exact parameter count, checkpoints in and out (legacy attention names, named errors),
// the latent normalisation of the SDXL pipeline.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/diffusion/vae.h"
#include "concord/diffusion/vae_config.h"
#include "concord/io/safetensors.h"
#include "concord/ops/conv3x3.h"
#include "diffusion_fixtures.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;
namespace fs = std::filesystem;

namespace {

fs::path tiny_vae_dir() { return concord::testing::tiny_sdxl_pipeline_dir() / "vae"; }
fs::path vae_reference() { return fixture("diffusion") / "vae_reference.safetensors"; }

// The tiny VAE's shape, as the fixture's config.json has it.
diffusion::AutoencoderKLConfig tiny_config() {
  diffusion::AutoencoderKLConfig c;
  c.down_block_types = {"DownEncoderBlock2D", "DownEncoderBlock2D"};
  c.up_block_types = {"UpDecoderBlock2D", "UpDecoderBlock2D"};
  c.block_out_channels = {8, 16};
  c.layers_per_block = 1;
  c.norm_num_groups = 4;
  c.latent_channels = 4;
  c.scaling_factor = 0.13025;
  return c;
}

// A tiny VAE with every parameter random (GroupNorm affines included), so a tensor loaded into
// the wrong place changes the output.
diffusion::AutoencoderKL random_vae(diffusion::AutoencoderKLConfig config = tiny_config()) {
  torch::manual_seed(3);
  diffusion::AutoencoderKL vae(config);
  torch::NoGradGuard no_grad;
  for (auto& p : vae->parameters()) p.add_(0.1 * at::randn_like(p));
  vae->eval();
  return vae;
}

void write_json(const fs::path& path, const Json& j) { concord::testing::write_file(path, j.dump(2)); }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(VAE, MatchesDiffusersPosteriorAndDecoder) {
  ASSERT_TRUE(fs::exists(vae_reference())) << vae_reference() << " is missing";
  auto ref = io::load_safetensors(vae_reference());
  diffusion::AutoencoderKL vae = diffusion::load_vae(tiny_vae_dir());
  EXPECT_EQ(vae->config.block_out_channels, (std::vector<int64_t>{8, 16}));
  EXPECT_DOUBLE_EQ(vae->config.scaling_factor, 0.13025);
  torch::NoGradGuard no_grad;
  // kAlways: every 3x3 convolution through Winograd F(4x4, 3x3) (ops/conv3x3.h).
  for (const auto mode : {ops::Conv3x3Winograd::kAuto, ops::Conv3x3Winograd::kAlways}) {
    SCOPED_TRACE(mode == ops::Conv3x3Winograd::kAlways ? "Winograd" : "auto");
    ops::Conv3x3WinogradGuard winograd(mode);
    const diffusion::DiagonalGaussian q = vae->encode(ref["image"]);
    const double e_mean = max_abs_diff(q.mean, ref["posterior_mean"]);
    const double e_logvar = max_abs_diff(q.logvar, ref["posterior_logvar"]);
    const double e_decoded = max_abs_diff(vae->decode(ref["z"]), ref["decoded"]);
    const double e_roundtrip = max_abs_diff(vae->decode(q.mean), ref["roundtrip"]);
    EXPECT_LT(e_mean, 1e-4);
    EXPECT_LT(e_logvar, 1e-4);
    EXPECT_LT(e_decoded, 1e-4);
    EXPECT_LT(e_roundtrip, 1e-4);
    EXPECT_LT(max_abs_diff(vae->forward(ref["image"]), ref["roundtrip"]), 1e-4);
    EXPECT_LT(max_abs_diff(q.std, at::exp(0.5 * ref["posterior_logvar"])), 1e-4);
    std::printf("[ max abs error ] mean %.3g  logvar %.3g  decoded %.3g  roundtrip %.3g\n", e_mean,
                e_logvar, e_decoded, e_roundtrip);
  }
}

TEST(VAE, CloneRunsTheSameForward) {
  // SdxlPipeline decodes a half-precision pipeline's latents with an fp32 clone of its VAE.
  auto ref = io::load_safetensors(vae_reference());
  diffusion::AutoencoderKL vae = diffusion::load_vae(tiny_vae_dir());
  diffusion::AutoencoderKL copy(std::dynamic_pointer_cast<diffusion::AutoencoderKLImpl>(vae->clone()));
  torch::NoGradGuard no_grad;
  const at::Tensor want = vae->forward(ref["image"]);
  for (auto& p : vae->parameters()) p.zero_();  // the copy owns its weights
  EXPECT_EQ(max_abs_diff(copy->forward(ref["image"]), want), 0.0);
}

TEST(VAE, ExactParameterCounts) {
  // SDXL's VAE: sum(p.numel() for p in AutoencoderKL(**config).parameters()) with diffusers
  // 0.42.1 on configs/models/sdxl-vae.json (stable-diffusion-xl-base-1.0's vae/config.json).
  const auto sdxl = diffusion::load_vae_config(::concord::testing::source_dir().string() + "/configs/models/sdxl-vae.json");
  EXPECT_EQ(sdxl.block_out_channels, (std::vector<int64_t>{128, 256, 512, 512}));
  EXPECT_EQ(diffusion::count_vae_parameters(sdxl), 83653863);
  int64_t by_block = 0;
  for (const auto& [name, n] : diffusion::count_vae_parameters_by_block(sdxl)) by_block += n;
  EXPECT_EQ(by_block, 83653863);
  // The tiny fixture's config: 43711 in diffusers 0.42.1 the same way.
  EXPECT_EQ(diffusion::count_vae_parameters(tiny_config()), 43711);
  // The formula is the model's own count, also without the quant convs or the mid attention and
  // with uneven widths.
  auto odd = tiny_config();
  odd.block_out_channels = {8, 16, 12};
  odd.down_block_types.push_back("DownEncoderBlock2D");
  odd.up_block_types.push_back("UpDecoderBlock2D");
  odd.layers_per_block = 2;
  odd.latent_channels = 3;
  odd.in_channels = 2;
  odd.out_channels = 5;
  for (bool quant : {true, false}) {
    for (bool attention : {true, false}) {
      odd.use_quant_conv = odd.use_post_quant_conv = quant;
      odd.mid_block_add_attention = attention;
      diffusion::AutoencoderKL vae(odd);
      EXPECT_EQ(vae->num_parameters(), diffusion::count_vae_parameters(odd)) << quant << attention;
    }
  }
}

TEST(VAE, SaveWritesWhatLoadReads) {
  concord::testing::TempDir tmp;
  auto config = tiny_config();
  config.latents_mean = std::vector<double>{0.1, -0.2, 0.3, 0.0};
  config.latents_std = std::vector<double>{1.5, 0.5, 2.0, 1.0};
  diffusion::AutoencoderKL vae = random_vae(config);
  diffusion::save_vae(vae, tmp / "v", /*max_shard_bytes=*/40000);
  EXPECT_TRUE(fs::exists(tmp / "v" / "diffusion_pytorch_model.safetensors.index.json"));
  int shards = 0;
  for (const auto& entry : fs::directory_iterator(tmp / "v")) shards += entry.path().extension() == ".safetensors";
  EXPECT_GT(shards, 1);
  diffusion::AutoencoderKL back = diffusion::load_vae(tmp / "v");
  EXPECT_EQ(diffusion::vae_config_to_json(back->config), diffusion::vae_config_to_json(config));
  EXPECT_EQ(*back->config.latents_std, *config.latents_std);
  EXPECT_FALSE(back->config.shift_factor.has_value());
  torch::manual_seed(0);
  const at::Tensor image = at::rand({1, 3, 16, 16}) * 2 - 1;
  torch::NoGradGuard no_grad;
  EXPECT_EQ(max_abs_diff(back->forward(image), vae->forward(image)), 0.0);
  // One file when it fits; bf16 on load.
  diffusion::save_vae(vae, tmp / "w");
  EXPECT_TRUE(fs::exists(tmp / "w" / "diffusion_pytorch_model.safetensors"));
  EXPECT_FALSE(fs::exists(tmp / "w" / "diffusion_pytorch_model.safetensors.index.json"));
  diffusion::ComponentLoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  diffusion::AutoencoderKL half = diffusion::load_vae(tmp / "w", bf16);
  EXPECT_EQ(half->decoder->conv_out->weight.scalar_type(), at::kBFloat16);
  // What loading in bf16 must do, exactly: every parameter is the fp32 one rounded to bf16.
  const auto rounded = half->named_parameters();
  for (const auto& p : vae->named_parameters()) {
    ASSERT_TRUE(rounded.contains(p.key())) << p.key();
    EXPECT_TRUE(at::equal(rounded[p.key()], p.value().to(at::kBFloat16))) << p.key();
  }
  // And the bf16 model runs. How close its output comes to fp32's depends on LibTorch's bf16 CPU
  // kernels, which differ by processor: with AVX-512 they accumulate in fp32 (under 0.1 here);
  // on an AVX2-only Zen 1, LibTorch 1.13's conv2d and mm accumulate in bf16 (a 64-channel 3x3
  // conv alone is 4.6% of its output's range off), and this output came 13% off.
  const at::Tensor ref = vae->forward(image);
  const at::Tensor out = half->forward(image.to(at::kBFloat16));
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_TRUE(out.isfinite().all().item<bool>());
  EXPECT_LT(max_abs_diff(out, ref), 0.25 * ref.abs().max().item<double>());
}

TEST(VAE, LegacyAttentionNamesLoad) {
  EXPECT_EQ(diffusion::vae_legacy_tensor_name("encoder.mid_block.attentions.0.query.weight"),
            "encoder.mid_block.attentions.0.to_q.weight");
  EXPECT_EQ(diffusion::vae_legacy_tensor_name("decoder.mid_block.attentions.0.proj_attn.bias"),
            "decoder.mid_block.attentions.0.to_out.0.bias");
  EXPECT_EQ(diffusion::vae_legacy_tensor_name("decoder.mid_block.attentions.0.group_norm.bias"),
            "decoder.mid_block.attentions.0.group_norm.bias");
  EXPECT_EQ(diffusion::vae_legacy_tensor_name("encoder.conv_in.weight"), "encoder.conv_in.weight");

  concord::testing::TempDir tmp;
  diffusion::AutoencoderKL vae = random_vae();
  diffusion::save_vae(vae, tmp / "v");
  const fs::path file = tmp / "v" / "diffusion_pytorch_model.safetensors";
  std::map<std::string, at::Tensor> legacy;
  int renamed = 0;
  for (auto& [name, t] : io::load_safetensors(file)) {
    std::string old = name;
    for (const auto& [now, was] : std::vector<std::pair<std::string, std::string>>{
             {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}) {
      const auto at = old.find(now);
      if (at == std::string::npos) continue;
      old.replace(at, now.size(), was);
      ++renamed;
    }
    legacy[old] = t.clone();
  }
  EXPECT_EQ(renamed, 16);  // weight and bias of 4 projections in 2 mid blocks
  io::save_safetensors(file, legacy);
  diffusion::AutoencoderKL back = diffusion::load_vae(tmp / "v");
  torch::NoGradGuard no_grad;
  const at::Tensor image = at::rand({1, 3, 8, 8}) * 2 - 1;
  EXPECT_EQ(max_abs_diff(back->forward(image), vae->forward(image)), 0.0);

  // Both names of one tensor: an error naming both.
  legacy["encoder.mid_block.attentions.0.to_q.weight"] = legacy["encoder.mid_block.attentions.0.query.weight"];
  io::save_safetensors(file, legacy);
  const std::string m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("'encoder.mid_block.attentions.0.query.weight' and "
                   "'encoder.mid_block.attentions.0.to_q.weight' are both read as"),
            std::string::npos)
      << m;
}

TEST(VAE, BadCheckpointsAndConfigsNameTheFileAndTensorOrKey) {
  concord::testing::TempDir tmp;
  diffusion::AutoencoderKL vae = random_vae();
  diffusion::save_vae(vae, tmp / "v");
  const fs::path file = tmp / "v" / "diffusion_pytorch_model.safetensors";
  const auto good = io::load_safetensors(file);

  auto tensors = good;
  tensors["decoder.up_blocks.1.resnets.1.conv2.weight"] = at::zeros({8, 8, 1, 1});
  io::save_safetensors(file, tensors);
  std::string m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("decoder.up_blocks.1.resnets.1.conv2.weight' has shape [8, 8, 1, 1], expected [8, 8, 3, 3]"),
            std::string::npos) << m;
  EXPECT_NE(m.find(file.string()), std::string::npos) << m;

  tensors = good;
  tensors["encoder.mid_block.attentions.0.to_q.lora_A"] = at::zeros({2});
  io::save_safetensors(file, tensors);
  m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("unexpected tensor 'encoder.mid_block.attentions.0.to_q.lora_A' (not part of a VAE"),
            std::string::npos) << m;

  tensors = good;
  tensors.erase("quant_conv.bias");
  io::save_safetensors(file, tensors);
  m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("tensor 'quant_conv.bias' is missing"), std::string::npos) << m;
  EXPECT_NE(m.find(file.string()), std::string::npos) << m;

  // A config whose weights belong to another VAE: no mid-block attention in the config.
  io::save_safetensors(file, good);
  Json config = load_json_file(tmp / "v" / "config.json");
  config["mid_block_add_attention"] = false;
  write_json(tmp / "v" / "config.json", config);
  m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("unexpected tensor 'decoder.mid_block.attentions.0."), std::string::npos) << m;

  // Unsupported config values, each named by its key.
  config["mid_block_add_attention"] = true;
  const std::vector<std::pair<std::string, Json>> bad = {
      {"down_block_types", Json{"DownEncoderBlock2D", "AttnDownEncoderBlock2D"}},
      {"up_block_types", Json{"UpDecoderBlock2D", "AttnUpDecoderBlock2D"}},
      {"act_fn", "gelu"},
      {"block_out_channels", Json{8, 18}},
      {"layers_per_block", Json{1, 1}},
      {"latents_mean", Json{0.1, 0.2}},
      {"shift_factor", "none"},
      {"sample_size", Json{32, 48}},
      {"_class_name", "AutoencoderTiny"}};
  for (const auto& [key, value] : bad) {
    Json c = config;
    c[key] = value;
    write_json(tmp / "v" / "config.json", c);
    m = error_of([&] { diffusion::load_vae(tmp / "v"); });
    EXPECT_NE(m.find("'" + key + "'"), std::string::npos) << key << ": " << m;
    EXPECT_NE(m.find("config.json"), std::string::npos) << key << ": " << m;
  }
  // A folder without weights.
  fs::remove(file);
  write_json(tmp / "v" / "config.json", config);
  m = error_of([&] { diffusion::load_vae(tmp / "v"); });
  EXPECT_NE(m.find("no diffusion_pytorch_model.safetensors or its index"), std::string::npos) << m;
}

TEST(VAE, LatentNormalisationIsTheSdxlPipelines) {
  auto config = tiny_config();
  torch::manual_seed(1);
  const at::Tensor z = at::randn({2, 4, 3, 3});
  // scaling_factor alone (SDXL): z * s, latents / s.
  EXPECT_LT(max_abs_diff(diffusion::normalize_latents(config, z), z * 0.13025), 1e-7);
  EXPECT_LT(max_abs_diff(diffusion::denormalize_latents(config, z), z / 0.13025), 1e-6);
  // latents_mean / latents_std (Playground v2.5's VAE): per channel.
  config.latents_mean = std::vector<double>{0.5, -0.25, 0.0, 1.0};
  config.latents_std = std::vector<double>{2.0, 0.5, 1.0, 4.0};
  const at::Tensor mean = at::tensor({0.5, -0.25, 0.0, 1.0}).view({1, 4, 1, 1});
  const at::Tensor stdv = at::tensor({2.0, 0.5, 1.0, 4.0}).view({1, 4, 1, 1});
  const at::Tensor n = diffusion::normalize_latents(config, z);
  EXPECT_LT(max_abs_diff(n, (z - mean) * 0.13025 / stdv), 1e-6);
  EXPECT_LT(max_abs_diff(diffusion::denormalize_latents(config, n), z), 1e-5);
  EXPECT_LT(max_abs_diff(diffusion::denormalize_latents(config, z), z * stdv / 0.13025 + mean),
            1e-5);
  // shift_factor (SD3 / Flux's rule).
  auto shifted = tiny_config();
  shifted.shift_factor = 0.0609;
  EXPECT_LT(max_abs_diff(diffusion::normalize_latents(shifted, z), (z - 0.0609) * 0.13025), 1e-7);
  EXPECT_LT(max_abs_diff(diffusion::denormalize_latents(shifted, z), z / 0.13025 + 0.0609), 1e-6);
  // Both: no diffusers rule.
  config.shift_factor = 0.1;
  EXPECT_NE(error_of([&] { diffusion::normalize_latents(config, z); }).find("shift_factor"), std::string::npos);

  // The helpers are encode / decode around the normalisation.
  diffusion::AutoencoderKL vae = random_vae();
  torch::NoGradGuard no_grad;
  const at::Tensor image = at::rand({2, 3, 16, 16}) * 2 - 1;
  const diffusion::DiagonalGaussian q = vae->encode(image);
  EXPECT_EQ(max_abs_diff(diffusion::latents_from_image(vae, image, diffusion::PosteriorDraw::mode),
                         q.mean * 0.13025),
            0.0);
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(7), g2 = at::make_generator<at::CPUGeneratorImpl>(7);
  EXPECT_EQ(
      max_abs_diff(diffusion::latents_from_image(vae, image, diffusion::PosteriorDraw::sample, g1),
                   q.sample(g2) * 0.13025),
      0.0);
  const at::Tensor latents = at::randn({2, 4, 8, 8});
  EXPECT_EQ(
      max_abs_diff(diffusion::image_from_latents(vae, latents), vae->decode(latents / 0.13025)),
      0.0);
  EXPECT_EQ(diffusion::image_from_latents(vae, latents).sizes(), (std::vector<int64_t>{2, 3, 16, 16}));
  EXPECT_NE(error_of([&] { diffusion::image_from_latents(vae, at::zeros({1, 3, 8, 8})); }).find("[B, 4, h, w]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { vae->encode(at::zeros({1, 3, 15, 16})); }).find("multiples of 2"), std::string::npos);
}

TEST(VAE, PosteriorIsDiffusersDiagonalGaussian) {
  diffusion::AutoencoderKL vae = random_vae();
  torch::NoGradGuard no_grad;
  const at::Tensor image = at::rand({2, 3, 16, 16}) * 2 - 1;
  diffusion::DiagonalGaussian q = vae->encode(image);
  EXPECT_EQ(q.mean.sizes(), (std::vector<int64_t>{2, 4, 8, 8}));
  EXPECT_EQ(max_abs_diff(q.std, at::exp(0.5 * q.logvar)), 0.0);
  // sample = mean + std * eps with eps drawn from the generator.
  at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(42), g2 = at::make_generator<at::CPUGeneratorImpl>(42);
  const at::Tensor s = q.sample(g1);
  EXPECT_EQ(max_abs_diff(s, q.mean + q.std * at::randn({2, 4, 8, 8}, g2)), 0.0);
  EXPECT_GT(max_abs_diff(s, q.sample(g1)), 0.0);
  // The clamp of the log-variance to [-30, 20].
  torch::NoGradGuard guard;
  vae->quant_conv->bias.index_put_({at::indexing::Slice(4, 8)}, 1e3);
  EXPECT_EQ(vae->encode(image).logvar.max().item<double>(), 20.0);
  vae->quant_conv->bias.index_put_({at::indexing::Slice(4, 8)}, -1e3);
  EXPECT_EQ(vae->encode(image).logvar.min().item<double>(), -30.0);
  // KL(q || N(0, I)) of a standard normal posterior is 0.
  diffusion::DiagonalGaussian unit{at::zeros({1, 4, 2, 2}), at::zeros({1, 4, 2, 2}), at::ones({1, 4, 2, 2})};
  EXPECT_EQ(unit.kl().item<double>(), 0.0);
  diffusion::DiagonalGaussian shifted{at::ones({1, 4, 2, 2}), at::zeros({1, 4, 2, 2}), at::ones({1, 4, 2, 2})};
  EXPECT_DOUBLE_EQ(shifted.kl().item<double>(), 8.0);  // 0.5 * 16 elements * mean^2
}

TEST(VAE, MatchesDiffusersOnCuda_CUDA) {
  CONCORD_REQUIRE_CUDA();
  auto ref = io::load_safetensors(vae_reference());
  diffusion::ComponentLoadOptions lo;
  lo.device = c10::Device(c10::kCUDA);
  diffusion::AutoencoderKL vae = diffusion::load_vae(tiny_vae_dir(), lo);
  torch::NoGradGuard no_grad;
  const diffusion::DiagonalGaussian q = vae->encode(ref["image"].cuda());
  EXPECT_LT(max_abs_diff(q.mean.cpu(), ref["posterior_mean"]), 1e-3);  // TF32 convolutions allowed
  EXPECT_LT(max_abs_diff(q.logvar.cpu(), ref["posterior_logvar"]), 1e-3);
  EXPECT_LT(max_abs_diff(vae->decode(ref["z"].cuda()).cpu(), ref["decoded"]), 1e-3);
  EXPECT_LT(max_abs_diff(vae->decode(q.mean).cpu(), ref["roundtrip"]), 1e-3);
}
