// The U-Net against diffusers 0.42's UNet2DConditionModel (fixtures written by
// scripts/fixtures/make_diffusion_fixtures.py): outputs and every captured intermediate feature,
// exact parameter counts of SDXL and the KOALA students, checkpoints in and out, and the
// schedulers against diffusers' DDPM and Euler discrete schedulers.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/diffusion/schedulers.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/diffusion/unet_config.h"
#include "concord/io/safetensors.h"
#include "concord/nn/feature_capture.h"
#include "concord/ops/conv3x3.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;

namespace {

diffusion::UNetInputs inputs_of(std::map<std::string, at::Tensor>& ref) {
  diffusion::UNetInputs in;
  in.sample = ref["sample"];
  in.timesteps = ref["timestep"];
  in.encoder_hidden_states = ref["encoder_hidden_states"];
  in.text_embeds = ref["text_embeds"];
  in.time_ids = ref["time_ids"];
  return in;
}

}  // namespace

TEST(UNet, MatchesDiffusersOutputsAndEveryFeature) {
  // kAlways: every 3x3 convolution through Winograd F(4x4, 3x3), which the fixtures' few
  // channels would not pick by themselves (ops/conv3x3.h).
  for (const auto mode : {ops::Conv3x3Winograd::kAuto, ops::Conv3x3Winograd::kAlways}) {
    for (const std::string name : {"tiny-sdxl", "tiny-koala"}) {
      SCOPED_TRACE(name + (mode == ops::Conv3x3Winograd::kAlways ? ", Winograd" : ""));
      ops::Conv3x3WinogradGuard winograd(mode);
      const auto dir = fixture("diffusion") / name;
      auto ref = io::load_safetensors(dir / "reference.safetensors");
      diffusion::UNet2DCondition unet = diffusion::load_unet(dir);
      std::vector<std::string> paths;
      for (const auto& [key, t] : ref) {
        if (key.rfind("feat.", 0) == 0) paths.push_back(key.substr(5));
      }
      ASSERT_GT(paths.size(), 20u);
      torch::NoGradGuard no_grad;
      nn::FeatureCapture capture(*unet, paths);
      const at::Tensor out = unet->forward(inputs_of(ref));
      EXPECT_LT(max_abs_diff(out, ref["sample_out"]), 1e-4);
      for (const auto& path : paths) {
        const at::Tensor got = capture.get(path);
        ASSERT_EQ(got.sizes(), ref["feat." + path].sizes()) << path;
        EXPECT_LT(max_abs_diff(got, ref["feat." + path]), 1e-4) << path;
      }
    }
  }
}

// The backward pass against diffusers' autograd (gradients.safetensors: the gradients of
// <g, sample_out> for a fixed cotangent g): the sample's and every parameter's, under diffusers'
// names, with ATen's 3x3 convolutions (kNever) and with every one through Winograd (kAlways:
// its input and weight gradients too). Each gradient is held to a fraction of its own largest
// value (they range over 0.5-51): 2e-5 with ATen's convolutions (measured up to 1.0e-5), 1e-4
// through Winograd, which rounds more (measured up to 3.4e-5). A wrong transpose, a
// missing term or a gradient routed to the wrong tensor is off by its own size.
TEST(UNet, MatchesDiffusersGradients) {
  for (const auto mode : {ops::Conv3x3Winograd::kNever, ops::Conv3x3Winograd::kAlways}) {
    for (const std::string name : {"tiny-sdxl", "tiny-koala"}) {
      SCOPED_TRACE(name + (mode == ops::Conv3x3Winograd::kAlways ? ", Winograd" : ", ATen"));
      ops::Conv3x3WinogradGuard winograd(mode);
      const double rtol = mode == ops::Conv3x3Winograd::kAlways ? 1e-4 : 2e-5;
      const auto dir = fixture("diffusion") / name;
      auto ref = io::load_safetensors(dir / "reference.safetensors");
      auto grads = io::load_safetensors(dir / "gradients.safetensors");
      diffusion::UNet2DCondition unet = diffusion::load_unet(dir);
      diffusion::UNetInputs in = inputs_of(ref);
      in.sample = in.sample.clone().requires_grad_(true);
      unet->forward(in).backward(grads["cotangent"]);
      auto expect_grad = [&](const std::string& what, const at::Tensor& got) {
        const at::Tensor& want = grads.at("grad." + what);
        ASSERT_TRUE(got.defined()) << what << " has no gradient";
        ASSERT_EQ(got.sizes(), want.sizes()) << what;
        const double rel = max_abs_diff(got, want) / want.abs().max().item<double>();
        EXPECT_LT(rel, rtol) << what;
      };
      expect_grad("sample", in.sample.grad());
      size_t checked = 0;
      for (const auto& item : unet->named_parameters()) {
        expect_grad(item.key(), item.value().grad());
        ++checked;
      }
      EXPECT_EQ(checked + 2, grads.size());  // + the cotangent and the sample
    }
  }
}

TEST(UNet, ShardedCheckpointLoadsTheSameModel) {
  auto ref = io::load_safetensors(fixture("diffusion") / "tiny-sdxl" / "reference.safetensors");
  diffusion::UNet2DCondition unet = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl-sharded");
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_abs_diff(unet->forward(inputs_of(ref)), ref["sample_out"]), 1e-4);
}

TEST(UNet, ExactParameterCountsOfSdxlAndTheKoalaStudents) {
  const std::pair<const char*, int64_t> want[] = {
      {"sdxl-unet", 2567463684}, {"koala-1b", 1161184324}, {"koala-700m", 782822724}};
  for (const auto& [name, count] : want) {
    const auto config = diffusion::load_unet_config(::concord::testing::source_dir().string() + "/configs/models/" +
                                                    name + ".json");
    EXPECT_EQ(diffusion::count_unet_parameters(config), count) << name;
  }
  // The formula is the model's own count on the fixtures.
  const Json summary = load_json_file(fixture("diffusion") / "summary.json");
  for (const std::string name : {"tiny-sdxl", "tiny-koala"}) {
    const auto config = diffusion::load_unet_config(fixture("diffusion") / name);
    diffusion::UNet2DCondition unet(config);
    EXPECT_EQ(unet->num_parameters(), diffusion::count_unet_parameters(config)) << name;
    EXPECT_EQ(unet->num_parameters(), summary["models"][name]["parameters"].get<int64_t>()) << name;
  }
}

TEST(UNet, SaveWritesWhatLoadReads) {
  concord::testing::TempDir tmp;
  diffusion::UNet2DCondition unet = diffusion::load_unet(fixture("diffusion") / "tiny-koala");
  diffusion::save_unet(unet, tmp / "u", /*max_shard_bytes=*/100000);
  EXPECT_TRUE(std::filesystem::exists(tmp / "u" / "diffusion_pytorch_model.safetensors.index.json"));
  diffusion::UNet2DCondition back = diffusion::load_unet(tmp / "u");
  auto ref = io::load_safetensors(fixture("diffusion") / "tiny-koala" / "reference.safetensors");
  torch::NoGradGuard no_grad;
  EXPECT_EQ(max_abs_diff(back->forward(inputs_of(ref)), unet->forward(inputs_of(ref))), 0.0);
  EXPECT_EQ(back->config.mid_block_type, "");
}

TEST(UNet, CloneRunsTheSameForward) {
  // A deep copy (koala_kd's EMA student, a frozen copy) computes what the original does: no
  // module keeps a pointer into its children that clone() leaves behind.
  diffusion::UNet2DCondition unet = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  diffusion::UNet2DCondition copy(
      std::dynamic_pointer_cast<diffusion::UNet2DConditionImpl>(unet->clone()));
  auto ref = io::load_safetensors(fixture("diffusion") / "tiny-sdxl" / "reference.safetensors");
  torch::NoGradGuard no_grad;
  const at::Tensor want = unet->forward(inputs_of(ref));
  EXPECT_EQ(max_abs_diff(copy->forward(inputs_of(ref)), want), 0.0);
  for (auto& p : unet->parameters()) p.zero_();  // the copy owns its weights
  EXPECT_EQ(max_abs_diff(copy->forward(inputs_of(ref)), want), 0.0);
}

TEST(UNet, BadCheckpointsNameTheFileAndTensor) {
  concord::testing::TempDir tmp;
  diffusion::UNet2DCondition unet = diffusion::load_unet(fixture("diffusion") / "tiny-koala");
  diffusion::save_unet(unet, tmp / "u");
  auto tensors = io::load_safetensors(tmp / "u" / "diffusion_pytorch_model.safetensors");
  tensors["conv_in.weight"] = at::zeros({8, 4, 1, 1});
  io::save_safetensors(tmp / "u" / "diffusion_pytorch_model.safetensors", tensors);
  try {
    diffusion::load_unet(tmp / "u");
    FAIL() << "a misshapen tensor loaded";
  } catch (const std::exception& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("conv_in.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("diffusion_pytorch_model.safetensors"), std::string::npos) << m;
  }
  // A config whose weights belong to another model (the SDXL-like fixture's config over the
  // KOALA student's weights): a missing tensor, named.
  std::filesystem::copy_file(fixture("diffusion") / "tiny-sdxl" / "config.json", tmp / "u" / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  diffusion::save_unet(unet, tmp / "v");
  std::filesystem::copy_file(fixture("diffusion") / "tiny-sdxl" / "config.json", tmp / "v" / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  try {
    diffusion::load_unet(tmp / "v");
    FAIL() << "weights of another config loaded";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("is missing"), std::string::npos) << e.what();
  }
  // Unsupported config values are named, not ignored.
  Json config = load_json_file(fixture("diffusion") / "tiny-sdxl" / "config.json");
  config["class_embed_type"] = "timestep";
  try {
    diffusion::unet_config_from_json(config, "c.json");
    FAIL() << "class_embed_type accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("class_embed_type"), std::string::npos) << e.what();
  }
}

TEST(Schedulers, DdpmMatchesDiffusers) {
  auto f = io::load_safetensors(fixture("diffusion") / "schedulers.safetensors");
  diffusion::DdpmSchedule s;
  EXPECT_LT(max_abs_diff(s.betas(), f["ddpm.betas"]), 1e-8);  // diffusers holds them in fp32
  EXPECT_LT(max_abs_diff(s.alphas_cumprod(), f["ddpm.alphas_cumprod"]), 1e-6);
  EXPECT_LT(max_abs_diff(s.add_noise(f["ddpm.x0"], f["ddpm.noise"], f["ddpm.t"]), f["ddpm.noisy"]),
            1e-5);
  EXPECT_LT(
      max_abs_diff(s.velocity(f["ddpm.x0"], f["ddpm.noise"], f["ddpm.t"]), f["ddpm.velocity"]),
      1e-5);
}

TEST(Schedulers, EulerMatchesDiffusers) {
  auto f = io::load_safetensors(fixture("diffusion") / "schedulers.safetensors");
  for (const std::string spacing : {"leading", "trailing", "linspace"}) {
    for (int64_t n : {10, 25}) {
      SCOPED_TRACE(spacing + " " + std::to_string(n));
      const std::string key = "euler." + spacing + "." + std::to_string(n);
      diffusion::EulerOptions o;
      o.timestep_spacing = spacing;
      diffusion::EulerSampler e(o, n);
      EXPECT_LT(max_abs_diff(e.timesteps(), f[key + ".timesteps"]), 1e-4);
      EXPECT_LT(
          max_abs_diff(e.sigmas(), f[key + ".sigmas"]) / f[key + ".sigmas"].max().item<double>(),
          1e-5);
      EXPECT_NEAR(e.init_noise_sigma(), f[key + ".init_noise_sigma"].item<double>(),
                  1e-5 * e.init_noise_sigma());
    }
  }
  for (const auto& [spacing, n] : std::vector<std::pair<std::string, int64_t>>{{"leading", 25}, {"trailing", 10}}) {
    const std::string key = "euler." + spacing + "." + std::to_string(n);
    const at::Tensor steps = f[key + ".step_index"];
    for (const std::string prediction : {"eps", "v"}) {
      diffusion::EulerOptions o;
      o.timestep_spacing = spacing;
      o.training.prediction_type = prediction == "eps" ? "epsilon" : "v_prediction";
      diffusion::EulerSampler e(o, n);
      EXPECT_LT(max_abs_diff(e.scale_model_input(f[key + ".sample"], 0), f[key + ".scaled_input"]),
                1e-5);
      for (int64_t j = 0; j < steps.size(0); ++j) {
        const int64_t i = steps[j].item<int64_t>();
        const at::Tensor want = f[key + "." + prediction + ".prev_sample." + std::to_string(i)];
        EXPECT_LT(max_abs_diff(e.step(f[key + ".model_output"], i, f[key + ".sample"]), want), 1e-4)
            << key << " " << prediction << " step " << i;
      }
    }
  }
  // Classifier-free guidance.
  const at::Tensor u = at::ones({2}), c = at::full({2}, 3.0);
  EXPECT_LT(max_abs_diff(diffusion::guided(u, c, 7.5), at::full({2}, 16.0)), 1e-6);
}

TEST(UNet, MatchesDiffusersOnCuda_CUDA) {
  CONCORD_REQUIRE_CUDA();
  auto ref = io::load_safetensors(fixture("diffusion") / "tiny-sdxl" / "reference.safetensors");
  diffusion::UNetLoadOptions lo;
  lo.device = c10::Device(c10::kCUDA);
  diffusion::UNet2DCondition unet = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl", lo);
  diffusion::UNetInputs in = inputs_of(ref);
  in.sample = in.sample.cuda();
  in.timesteps = in.timesteps.cuda();
  in.encoder_hidden_states = in.encoder_hidden_states.cuda();
  in.text_embeds = in.text_embeds.cuda();
  in.time_ids = in.time_ids.cuda();
  torch::NoGradGuard no_grad;
  EXPECT_LT(max_abs_diff(unet->forward(in).cpu(), ref["sample_out"]),
            1e-3);  // TF32 matmuls allowed
}
