// prepare_latents against the SDXL training script's preprocessing and diffusers' VAE and text
// encoders (fixture: tests/fixtures/diffusion/prepare/, made by
// scripts/fixtures/make_sdxl_pipeline_fixtures.py): pixels, time ids, latents and embeddings of
// every good image; bad images counted with their reasons; a resumed run equal to an
// uninterrupted one; the shards open as koala_kd's training data.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/prepare_latents.h"
#include "concord/diffusion/unet_config.h"
#include "concord/io/safetensors.h"
#include "diffusion_fixtures.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;
using concord::testing::tiny_sdxl_pipeline_dir;
namespace fs = std::filesystem;

namespace {

fs::path prepare_dir() { return fixture("diffusion") / "prepare"; }
struct Loaded {
  diffusion::SdxlTextEncoders text;
  diffusion::AutoencoderKL vae;
};

Loaded load() {
  return {diffusion::SdxlTextEncoders::load(tiny_sdxl_pipeline_dir()),
          diffusion::load_vae(tiny_sdxl_pipeline_dir() / "vae")};
}

std::string stem(const fs::path& p) { return p.stem().string(); }

}  // namespace

TEST(PrepareLatents, ResizeAndCentreCropMatchTheTrainingScript) {
  auto ref = io::load_safetensors(prepare_dir() / "prepare_reference.safetensors");
  int checked = 0;
  for (const std::string name : {"rgb_47x40.png", "rgb_40x64.jpg", "rgba_33x33.png",
                                 "grey_40x36.png", "cmyk_36x48.jpg"}) {
    SCOPED_TRACE(name);
    const io::Image image = io::read_image(prepare_dir() / name);
    const auto s = stem(name);
    if (ref.count(s + ".decoded")) {
      EXPECT_LT(max_abs_diff(io::image_to_tensor(image), ref[s + ".decoded"][0]), 1e-7);
    }
    const auto crop = diffusion::sdxl_resize_center_crop(image, 32);
    EXPECT_LT(max_abs_diff(crop.pixels, ref[s + ".pixels"][0]), 1e-5);
    const at::Tensor ids = ref[s + ".time_ids"];
    for (int k = 0; k < 6; ++k) EXPECT_EQ(crop.time_ids[k], ids[k].item<int64_t>()) << k;
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

TEST(PrepareLatents, WritesShardsEqualToDiffusersAndListsBadImages) {
  auto ref = io::load_safetensors(prepare_dir() / "prepare_reference.safetensors");
  const auto inputs = diffusion::read_image_captions(prepare_dir() / "captions.jsonl");
  ASSERT_EQ(inputs.size(), 8u);
  EXPECT_EQ(inputs[1].where, (prepare_dir() / "captions.jsonl").string() + ":2");
  auto [text, vae] = load();
  const concord::testing::TempDir tmp;
  diffusion::PrepareLatentsOptions o;
  o.resolution = 32;
  o.draw = diffusion::PosteriorDraw::mode;
  o.shard_size = 3;
  o.batch_size = 2;
  const auto r = diffusion::prepare_latents(inputs, text, vae, tmp / "out", o);
  EXPECT_EQ(r.records, 8);
  EXPECT_EQ(r.written, 3);
  ASSERT_EQ(r.bad.size(), 5u);
  std::map<std::string, std::string> reasons;
  for (const auto& b : r.bad) reasons[fs::path(b.path).filename().string()] = b.reason;
  EXPECT_NE(reasons["grey_40x36.png"].find("grey"), std::string::npos) << reasons["grey_40x36.png"];
  EXPECT_NE(reasons["cmyk_36x48.jpg"].find("CMYK"), std::string::npos) << reasons["cmyk_36x48.jpg"];
  EXPECT_NE(reasons["tiny_8x8.png"].find("too small"), std::string::npos) << reasons["tiny_8x8.png"];
  EXPECT_NE(reasons["truncated.png"].find("truncated.png"), std::string::npos) << reasons["truncated.png"];
  EXPECT_NE(reasons["notes.png"].find("notes.png"), std::string::npos) << reasons["notes.png"];

  // The good ones, in input order: rgb_47x40, rgb_40x64, rgba_33x33.
  const auto spec =
      diffusion::latent_spec_for(diffusion::load_unet_config(tiny_sdxl_pipeline_dir() / "unet"));
  const diffusion::LatentShards shards(tmp / "out", spec);
  ASSERT_EQ(shards.size(), 3);
  const auto batch = shards.get_batch({0, 1, 2});
  int64_t row = 0;
  for (const std::string s : {"rgb_47x40", "rgb_40x64", "rgba_33x33"}) {
    SCOPED_TRACE(s);
    EXPECT_LT(max_abs_diff(batch.latents[row], ref[s + ".latents"][0]), 1e-5);
    EXPECT_LT(max_abs_diff(batch.encoder_hidden_states[row], ref[s + ".prompt_embeds"][0]), 1e-5);
    EXPECT_LT(max_abs_diff(batch.text_embeds[row], ref[s + ".pooled_prompt_embeds"][0]), 1e-5);
    EXPECT_LT(max_abs_diff(batch.time_ids[row], ref[s + ".time_ids"]), 1e-9);
    ++row;
  }
}

TEST(PrepareLatents, AcceptsGreyscaleAndCmykWhenAsked) {
  auto ref = io::load_safetensors(prepare_dir() / "prepare_reference.safetensors");
  auto [text, vae] = load();
  const concord::testing::TempDir tmp;
  diffusion::PrepareLatentsOptions o;
  o.resolution = 32;
  o.draw = diffusion::PosteriorDraw::mode;
  o.accept_greyscale = o.accept_cmyk = true;
  const auto r = diffusion::prepare_latents(
      diffusion::read_image_captions(prepare_dir() / "captions.jsonl"), text, vae, tmp / "out", o);
  EXPECT_EQ(r.written, 5);
  EXPECT_EQ(r.bad.size(), 3u);
  const auto shard = io::load_safetensors(tmp / "out" / "shard-00000.safetensors");
  EXPECT_LT(max_abs_diff(shard.at("latents")[3], ref["grey_40x36.latents"][0]), 1e-5);
  EXPECT_LT(max_abs_diff(shard.at("latents")[4], ref["cmyk_36x48.latents"][0]), 1e-5);
}

TEST(PrepareLatents, AResumedRunWritesTheSameShardsAsAnUninterruptedOne) {
  const auto inputs = diffusion::read_image_captions(prepare_dir() / "captions.jsonl");
  auto [text, vae] = load();
  const concord::testing::TempDir tmp;
  diffusion::PrepareLatentsOptions o;
  o.resolution = 32;
  o.shard_size = 2;  // chunks of two records: shards 0, 1 and 2 hold the good images
  o.batch_size = 1;
  o.seed = 5;
  const auto whole = diffusion::prepare_latents(inputs, text, vae, tmp / "whole", o);
  struct Stop {};
  try {
    diffusion::prepare_latents(inputs, text, vae, tmp / "cut", o, false, [](int64_t done, int64_t) {
      if (done == 1) throw Stop{};
    });
    FAIL();
  } catch (const Stop&) {
  }
  o.batch_size = 3;  // batching must not change a record's draw
  const auto resumed = diffusion::prepare_latents(inputs, text, vae, tmp / "cut", o, true);
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(resumed.written, whole.written);
  EXPECT_EQ(resumed.bad.size(), whole.bad.size());
  for (const auto& e : fs::directory_iterator(tmp / "whole")) {
    if (e.path().extension() != ".safetensors") continue;
    EXPECT_EQ(read_file(e.path()), read_file(tmp / "cut" / e.path().filename())) << e.path();
  }
  // Other options over the same folder: refused, not mixed; a fresh run into it too.
  o.resolution = 16;
  EXPECT_THROW(diffusion::prepare_latents(inputs, text, vae, tmp / "cut", o, true), ConfigError);
  EXPECT_THROW(diffusion::prepare_latents(inputs, text, vae, tmp / "cut", o, false), ConfigError);
  EXPECT_TRUE(fs::exists(tmp / "cut" / "shard-00000.safetensors"));  // nothing deleted
  // bf16 latents and states; the time ids keep their pixel counts in fp32.
  o.resolution = 32;
  o.dtype = at::kBFloat16;
  diffusion::prepare_latents(inputs, text, vae, tmp / "bf16", o);
  const auto shard = io::load_safetensors(tmp / "bf16" / "shard-00000.safetensors");
  EXPECT_EQ(shard.at("latents").scalar_type(), at::kBFloat16);
  EXPECT_EQ(shard.at("time_ids").scalar_type(), at::kFloat);
}

TEST(PrepareLatents, CaptionErrorsNameTheLine) {
  const concord::testing::TempDir tmp;
  concord::testing::write_file(tmp / "c.jsonl", "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"b.png\"}\n");
  try {
    diffusion::read_image_captions(tmp / "c.jsonl");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("c.jsonl:2"), std::string::npos) << e.what();
  }
  concord::testing::write_file(tmp / "folder" / "x.png", "");
  try {
    diffusion::read_image_captions(tmp / "folder");
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("x.txt"), std::string::npos) << e.what();
  }
}
