// Component configs from outside (diffusers' U-Net, VAE and scheduler configs, transformers' CLIP
// text config) that asked for what the code could not do: each now ends in a one-line
// ConfigError naming the file and the key before anything is counted or allocated. Found by
// fuzz/fuzz_diffusion_config.cpp, or by reading validate() while writing it; the "was" comments
// say what happened before.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/diffusion/clip_text_encoder.h"
#include "concord/diffusion/schedulers.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_config.h"
#include "concord/diffusion/vae_config.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;

namespace {

Json pipeline_config(const std::string& component, const std::string& file = "config.json") {
  return load_json_file(fixture("diffusion") / "tiny-sdxl-pipeline" / component / file);
}

// `parse(j)` throws a ConfigError whose one line names the source and holds every needle.
template <typename Parse>
void expect_config_error(Parse&& parse, const Json& j, const std::vector<std::string>& needles) {
  try {
    parse(j);
    ADD_FAILURE() << "accepted: " << j.dump();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("bad.json: ", 0), 0u) << msg;
    for (const auto& needle : needles) EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

auto parse_unet = [](const Json& j) { return diffusion::unet_config_from_json(j, "bad.json"); };
auto parse_vae = [](const Json& j) { return diffusion::vae_config_from_json(j, "bad.json"); };
auto parse_clip = [](const Json& j) { return diffusion::clip_text_config_from_json(j, "bad.json"); };
auto parse_euler = [](const Json& j) { return diffusion::euler_options_from_json(j, "bad.json"); };

}  // namespace

TEST(ConfigBadInput, UNetNormGroupsOfZero) {
  Json j = pipeline_config("unet");
  j["norm_num_groups"] = 0;  // was a division by zero in validate(): SIGFPE in `concord params`
  expect_config_error(parse_unet, j, {"norm_num_groups", "is 0"});
}

TEST(ConfigBadInput, UNetTextTimeWithoutItsEmbeddingSizes) {
  // Was accepted, then UNet2DCondition's constructor threw c10::Error "from is out of bounds for
  // float" (a Linear with 0 inputs).
  Json j = pipeline_config("unet");
  j.erase("projection_class_embeddings_input_dim");
  expect_config_error(parse_unet, j, {"projection_class_embeddings_input_dim"});
  j = pipeline_config("unet");
  j["addition_time_embed_dim"] = 0;
  expect_config_error(parse_unet, j, {"addition_time_embed_dim"});
}

TEST(ConfigBadInput, AbsurdSizesAreRefusedByName) {
  // Were accepted; count_*_parameters overflowed int64 (`concord params` printed
  // -8297504824380211196 for this U-Net) and a constructor would have tried to allocate them.
  const int64_t tera = 1000000000000;
  Json j = pipeline_config("unet");
  j["block_out_channels"] = {tera, 2 * tera, 3 * tera};
  j["norm_num_groups"] = 1;
  j["attention_head_dim"] = 1;
  expect_config_error(parse_unet, j, {"block_out_channels", "1000000000000"});
  j = pipeline_config("unet");
  j["transformer_layers_per_block"] = tera;
  expect_config_error(parse_unet, j, {"transformer_layers_per_block"});
  j = pipeline_config("unet");
  j["block_out_channels"] = std::vector<int64_t>(9, 32);
  j["down_block_types"] = std::vector<std::string>(9, "DownBlock2D");
  j["up_block_types"] = std::vector<std::string>(9, "UpBlock2D");
  j["attention_head_dim"] = 1;
  j["transformer_layers_per_block"] = 1;
  j["layers_per_block"] = 1;
  expect_config_error(parse_unet, j, {"block_out_channels", "9 blocks"});

  j = pipeline_config("vae");
  j["block_out_channels"] = std::vector<int64_t>(j["block_out_channels"].size(), tera);
  j["norm_num_groups"] = 1;
  expect_config_error(parse_vae, j, {"block_out_channels"});
  j = pipeline_config("vae");
  j["block_out_channels"] = std::vector<int64_t>(64, 32);  // downsampling_factor: 1 << 63
  j["down_block_types"] = std::vector<std::string>(64, "DownEncoderBlock2D");
  j["up_block_types"] = std::vector<std::string>(64, "UpDecoderBlock2D");
  expect_config_error(parse_vae, j, {"block_out_channels", "64 blocks"});
  j = pipeline_config("vae");
  j["latent_channels"] = tera;
  j["latents_mean"] = nullptr;
  j["latents_std"] = nullptr;
  expect_config_error(parse_vae, j, {"latent_channels"});

  j = pipeline_config("text_encoder");
  j["hidden_size"] = tera;
  j["num_attention_heads"] = 1;
  expect_config_error(parse_clip, j, {"hidden_size"});
  j = pipeline_config("text_encoder");
  j["vocab_size"] = tera;
  expect_config_error(parse_clip, j, {"vocab_size"});

  j = pipeline_config("scheduler", "scheduler_config.json");
  j["num_train_timesteps"] = tera;  // EulerSampler would have allocated a 10^12-entry table
  expect_config_error(parse_euler, j, {"num_train_timesteps"});
}

// An integer key given as a float beyond int64 was cast by nlohmann's get<int64_t>(), which is
// undefined behaviour (fuzz_diffusion_config: UBSan, an eos_token_id of 9.9e21). Integral
// floats within range are still integers, as Python writes them sometimes.
TEST(ConfigBadInput, IntegerKeysRefuseFloatsOutsideTheRange) {
  Json clip = pipeline_config("text_encoder");
  clip["eos_token_id"] = 9.922337203685477e21;
  expect_config_error(parse_clip, clip, {"key 'eos_token_id'", "not an integer in ["});
  clip["eos_token_id"] = 2.5;
  expect_config_error(parse_clip, clip, {"key 'eos_token_id'", "not an integer"});
  clip["eos_token_id"] = 2.0;
  EXPECT_EQ(parse_clip(clip).eos_token_id, 2);
  Json unet = pipeline_config("unet");
  unet["block_out_channels"] = Json::array({32, 1e300});
  expect_config_error(parse_unet, unet, {"block_out_channels"});
}

TEST(ConfigBadInput, SchedulerValuesOutsideTheirRange) {
  const Json base = pipeline_config("scheduler", "scheduler_config.json");
  Json j = base;
  j["steps_offset"] = 1000;  // every "leading" timestep past the table
  expect_config_error(parse_euler, j, {"steps_offset", "1000"});
  j["steps_offset"] = -1;
  expect_config_error(parse_euler, j, {"steps_offset"});
  j = base;
  j["beta_end"] = 1.5;  // alpha_bar < 0: NaN sigmas
  expect_config_error(parse_euler, j, {"beta_end"});
  j = base;
  j["beta_start"] = -0.1;  // scaled_linear takes its square root
  expect_config_error(parse_euler, j, {"beta_start"});
}

TEST(Schedulers, EulerHoldsTheLastSigmaBeyondTheTableAsDiffusers) {
  // SDXL's scheduler ("leading", steps_offset 1) run with as many steps as training timesteps
  // asks for t = T, one past the table: was an index error (c10::Error) building the sampler;
  // diffusers' np.interp holds the table's last value there.
  diffusion::EulerOptions o;
  o.training.num_train_timesteps = 10;
  o.timestep_spacing = "leading";
  o.steps_offset = 1;
  diffusion::EulerSampler e(o, 10);
  EXPECT_EQ(e.timesteps()[0].item<float>(), 10.0f);
  const at::Tensor ac = diffusion::DdpmSchedule(o.training).alphas_cumprod();
  const double last = std::sqrt((1.0 - ac[9].item<double>()) / ac[9].item<double>());
  EXPECT_FLOAT_EQ(e.sigmas()[0].item<float>(), static_cast<float>(last));
  // t = 9 .. 1 hit the table exactly: t = 9 is its last entry too, t = 8 the one before.
  EXPECT_FLOAT_EQ(e.sigmas()[1].item<float>(), static_cast<float>(last));
  const double eight = std::sqrt((1.0 - ac[8].item<double>()) / ac[8].item<double>());
  EXPECT_FLOAT_EQ(e.sigmas()[2].item<float>(), static_cast<float>(eight));
}
