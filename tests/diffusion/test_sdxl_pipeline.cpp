// SDXL's text side and the whole pipeline against transformers 5.24 / diffusers 0.42
// (fixtures by scripts/fixtures/make_sdxl_pipeline_fixtures.py): CLIP token ids of 302 captions
// (English, Turkic, Cyrillic, Arabic script, CJK, emoji, NFD accents, truncation) from the slow
// files and from tokenizer.json, both text encoders' states, and StableDiffusionXLPipeline's
// prompt embeddings, time ids and final latents and images for the same initial noise.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <fstream>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/diffusion/clip_text_encoder.h"
#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/diffusion/sdxl_text.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/io/safetensors.h"
#include "concord/text/bpe_tokenizer.h"
#include "diffusion_fixtures.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;
using concord::testing::max_abs_diff;
using concord::testing::tiny_sdxl_pipeline_dir;
namespace fs = std::filesystem;

namespace {

std::vector<int64_t> row(const at::Tensor& ids, int64_t b) {
  const at::Tensor r = ids[b].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

std::vector<int64_t> as_int64(const std::vector<text::TokenId>& v) {
  return std::vector<int64_t>(v.begin(), v.end());
}

}  // namespace

TEST(ClipTokenizer, SlowFilesAndTokenizerJsonGiveTransformersIdsOnEveryCaption) {
  const Json ref = load_json_file(fixture("diffusion") / "clip_tokens.json");
  const auto& captions = ref.at("captions");
  ASSERT_GE(captions.size(), 300u);
  for (const std::string which : {"tokenizer", "tokenizer_2"}) {
    SCOPED_TRACE(which);
    const std::string suffix = which == "tokenizer" ? "" : "_2";
    const auto slow = text::load_tokenizer(tiny_sdxl_pipeline_dir() / which);
    const auto fast = text::load_tokenizer(fixture("diffusion") / "clip-tokenizer-json" / which);
    EXPECT_EQ(slow->pad_id(), ref["tokenizers"][which]["pad_token_id"].get<int64_t>());
    std::vector<std::string> texts;
    for (const auto& c : captions) texts.push_back(c.at("text").get<std::string>());
    const at::Tensor padded = diffusion::clip_token_ids(*slow, texts, 77);
    const at::Tensor padded_fast = diffusion::clip_token_ids(*fast, texts, 77);
    int64_t truncated = 0;
    for (size_t i = 0; i < captions.size(); ++i) {
      const auto& c = captions[i];
      const std::string& t = texts[i];
      const auto full = c.at("full_ids" + suffix).get<std::vector<int64_t>>();
      truncated += full.size() > 77;
      EXPECT_EQ(as_int64(slow->encode(t, true)), full) << c.at("kind") << ": " << t;
      EXPECT_EQ(as_int64(fast->encode(t, true)), full) << c.at("kind") << ": " << t;
      const auto ids = c.at("ids" + suffix).get<std::vector<int64_t>>();
      EXPECT_EQ(row(padded, static_cast<int64_t>(i)), ids) << t;
      EXPECT_EQ(row(padded_fast, static_cast<int64_t>(i)), ids) << t;
    }
    EXPECT_GE(truncated, 3) << "the fixture should exercise truncation";
  }
}

TEST(ClipTokenizer, NormalizersMatchTokenizersOnHardCases) {
  const auto tok = text::load_tokenizer(tiny_sdxl_pipeline_dir() / "tokenizer");
  // NFC: a decomposed e + U+0301 tokenizes as the composed é; İ lower-cases to i + U+0307.
  EXPECT_EQ(tok->encode("caf\xC3\xA9"), tok->encode("cafe\xCC\x81"));
  EXPECT_EQ(tok->encode("\xC4\xB0"), tok->encode("i\xCC\x87"));
  EXPECT_EQ(tok->encode("A  Photo\t\nOF"), tok->encode("a photo of"));
  // Decoding as transformers' CLIPTokenizer: "</w>" becomes a space, the ends trimmed.
  EXPECT_EQ(tok->decode(tok->encode("A red  Fox!", true), true), "a red fox !");
}

TEST(ClipTokenizer, SlowFilesErrorsNameTheFile) {
  const concord::testing::TempDir tmp;
  const fs::path dir = tmp.path();
  for (const char* f : {"vocab.json", "merges.txt", "tokenizer_config.json"}) {
    fs::copy_file(tiny_sdxl_pipeline_dir() / "tokenizer" / f, dir / f);
  }
  {
    std::ofstream(dir / "merges.txt", std::ios::app) << "only-one-token\n";
  }
  try {
    text::load_tokenizer(dir);
    FAIL() << "a bad merges line must fail";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("merges.txt:"), std::string::npos) << e.what();
  }
  fs::copy_file(tiny_sdxl_pipeline_dir() / "tokenizer" / "merges.txt", dir / "merges.txt",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json") << R"({"tokenizer_class": "BertTokenizer"})";
  try {
    text::load_tokenizer(dir);
    FAIL() << "an unknown tokenizer class must fail";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("BertTokenizer"), std::string::npos) << e.what();
  }
}

TEST(ClipTextEncoder, MatchesTransformersStatesAndPooledOutputs) {
  auto ref = io::load_safetensors(fixture("diffusion") / "clip_text.safetensors");
  auto te1 = diffusion::load_clip_text_encoder(tiny_sdxl_pipeline_dir() / "text_encoder", {});
  auto te2 = diffusion::load_clip_text_encoder(tiny_sdxl_pipeline_dir() / "text_encoder_2", {});
  EXPECT_EQ(te1->config.projection_dim, 0);
  EXPECT_EQ(te2->config.projection_dim, 12);
  EXPECT_EQ(te1->num_parameters(), diffusion::count_clip_text_parameters(te1->config));
  EXPECT_EQ(te2->num_parameters(), diffusion::count_clip_text_parameters(te2->config));
  torch::NoGradGuard no_grad;
  const auto o1 = te1->forward(ref["input_ids_1"]);
  EXPECT_LT(max_abs_diff(o1.last_hidden_state, ref["te1_last"]), 1e-5);
  EXPECT_LT(max_abs_diff(o1.penultimate(), ref["te1_penultimate"]), 1e-5);
  EXPECT_LT(max_abs_diff(o1.pooled, ref["te1_pooled"]), 1e-5);
  const auto o2 = te2->forward(ref["input_ids_2"]);
  EXPECT_LT(max_abs_diff(o2.last_hidden_state, ref["te2_last"]), 1e-5);
  EXPECT_LT(max_abs_diff(o2.penultimate(), ref["te2_penultimate"]), 1e-5);
  EXPECT_LT(max_abs_diff(o2.pooled, ref["te2_pooled"]), 1e-5);
  EXPECT_LT(max_abs_diff(o2.text_embeds, ref["te2_text_embeds"]), 1e-5);
}

TEST(ClipTextEncoder, SavesWithHubNamesAndLoadsBack) {
  auto te2 = diffusion::load_clip_text_encoder(tiny_sdxl_pipeline_dir() / "text_encoder_2", {});
  const concord::testing::TempDir tmp;
  const fs::path dir = tmp.path();
  diffusion::save_clip_text_encoder(te2, dir);
  const auto saved = io::load_safetensors(dir / "model.safetensors");
  EXPECT_TRUE(saved.count("text_model.encoder.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(saved.count("text_projection.weight"));
  auto back = diffusion::load_clip_text_encoder(dir, {});
  const at::Tensor ids = at::randint(0, 900, {2, 77}, at::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(at::equal(back->forward(ids).text_embeds, te2->forward(ids).text_embeds));
}

TEST(ClipTextEncoder, SdxlEncoderParameterCounts) {
  // transformers 5.24 on the meta device (scripts/fixtures/make_sdxl_pipeline_fixtures.py):
  // CLIP ViT-L/14's text model and OpenCLIP ViT-bigG/14's with its projection.
  diffusion::ClipTextConfig l;
  EXPECT_EQ(diffusion::count_clip_text_parameters(l), 123060480);
  diffusion::ClipTextConfig g;
  g.hidden_size = 1280;
  g.intermediate_size = 5120;
  g.num_hidden_layers = 32;
  g.num_attention_heads = 20;
  g.hidden_act = "gelu";
  g.projection_dim = 1280;
  EXPECT_EQ(diffusion::count_clip_text_parameters(g), 694659840);
}

namespace {

struct Case {
  std::string name;
  Json settings;
};

diffusion::SdxlGenerateOptions options_of(const Json& c) {
  diffusion::SdxlGenerateOptions o;
  o.height = c.at("height").get<int64_t>();
  o.width = c.at("width").get<int64_t>();
  o.num_inference_steps = c.at("num_inference_steps").get<int64_t>();
  o.guidance_scale = c.at("guidance_scale").get<double>();
  o.guidance_rescale = c.at("guidance_rescale").get<double>();
  if (!c.at("negative_prompt").is_null()) {
    o.negative_prompt = std::vector<std::string>{c.at("negative_prompt").get<std::string>()};
  }
  o.timestep_spacing = c.at("timestep_spacing").get<std::string>();
  return o;
}

}  // namespace

TEST(SdxlPipeline, EveryCaseMatchesStableDiffusionXLPipeline) {
  const Json cases = load_json_file(fixture("diffusion") / "sdxl_pipeline_reference.json").at("cases");
  auto ref = io::load_safetensors(fixture("diffusion") / "sdxl_pipeline_reference.safetensors");
  auto pipe = diffusion::SdxlPipeline::load(tiny_sdxl_pipeline_dir());
  EXPECT_EQ(pipe.vae_scale_factor(), 2);
  ASSERT_EQ(cases.size(), 5u);  // cfg, zeros, nocfg, trailing, rescale
  for (const auto& [name, c] : cases.items()) {
    SCOPED_TRACE(name);
    const auto prompts = c.at("prompt").get<std::vector<std::string>>();
    const auto out = pipe.generate(prompts, options_of(c), ref[name + ".init_latents"]);
    EXPECT_LT(max_abs_diff(out.prompt.embeds, ref[name + ".prompt_embeds"]), 1e-5);
    EXPECT_LT(max_abs_diff(out.prompt.pooled, ref[name + ".pooled_prompt_embeds"]), 1e-5);
    if (c.at("do_classifier_free_guidance").get<bool>()) {
      EXPECT_LT(max_abs_diff(out.negative.embeds, ref[name + ".negative_prompt_embeds"]), 1e-5);
      EXPECT_LT(max_abs_diff(out.negative.pooled, ref[name + ".negative_pooled_prompt_embeds"]),
                1e-5);
    }
    EXPECT_LT(max_abs_diff(out.add_time_ids, ref[name + ".add_time_ids"][0]), 0.0 + 1e-9);
    EXPECT_LT(max_abs_diff(out.timesteps, ref[name + ".timesteps"]), 1e-4);
    EXPECT_LT(max_abs_diff(out.sigmas, ref[name + ".sigmas"]), 1e-5);
    // 1e-4 relative to the latents' scale: "trailing" starts at sigma 14.6 and ends with |x| ~ 100.
    const at::Tensor want = ref[name + ".final_latents"];
    EXPECT_LT(max_abs_diff(out.latents, want),
              1e-4 * std::max(1.0, want.abs().max().item<double>()));
    EXPECT_LT(max_abs_diff(out.images.permute({0, 2, 3, 1}), ref[name + ".images"]), 1e-4);
  }
}

TEST(SdxlPipeline, MatchesStableDiffusionXLPipelineOnCuda_CUDA) {
  // Every component on the device: text encoders, the scheduler's tensors, guidance, the VAE.
  CONCORD_REQUIRE_CUDA();
  const Json c = load_json_file(fixture("diffusion") / "sdxl_pipeline_reference.json").at("cases").at("cfg");
  auto ref = io::load_safetensors(fixture("diffusion") / "sdxl_pipeline_reference.safetensors");
  diffusion::SdxlLoadOptions lo;
  lo.components.device = c10::Device(c10::kCUDA);
  auto pipe = diffusion::SdxlPipeline::load(tiny_sdxl_pipeline_dir(), lo);
  const auto out = pipe.generate(c.at("prompt").get<std::vector<std::string>>(), options_of(c),
                                 ref["cfg.init_latents"].cuda());
  EXPECT_TRUE(out.latents.is_cuda());
  EXPECT_LT(max_abs_diff(out.prompt.embeds.cpu(), ref["cfg.prompt_embeds"]), 1e-3);
  const at::Tensor want = ref["cfg.final_latents"];
  // cuDNN may run the convolutions in TF32 (LibTorch's default): 1e-2 of the latents' scale.
  EXPECT_LT(max_abs_diff(out.latents.cpu(), want),
            1e-2 * std::max(1.0, want.abs().max().item<double>()));
  EXPECT_LT(max_abs_diff(out.images.permute({0, 2, 3, 1}).cpu(), ref["cfg.images"]), 1e-2);
}

TEST(SdxlPipeline, SeededRunsRepeatAndSeedsDiffer) {
  auto pipe = diffusion::SdxlPipeline::load(tiny_sdxl_pipeline_dir());
  diffusion::SdxlGenerateOptions o;
  o.num_inference_steps = 2;
  o.seed = 7;
  const auto a = pipe.generate({"a cat"}, o, {}, false);
  const auto b = pipe.generate({"a cat"}, o, {}, false);
  EXPECT_TRUE(at::equal(a.latents, b.latents));
  o.seed = 8;
  EXPECT_FALSE(at::equal(a.latents, pipe.generate({"a cat"}, o, {}, false).latents));
  o.images_per_prompt = 2;
  const auto two = pipe.generate({"a cat", "a dog"}, o, {}, true);
  EXPECT_EQ(two.latents.size(0), 4);
  EXPECT_EQ(two.images.sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
  EXPECT_GE(two.images.min().item<double>(), 0.0);
  EXPECT_LE(two.images.max().item<double>(), 1.0);
}

TEST(SdxlPipeline, LoadErrorsNameTheFileAndKey) {
  const concord::testing::TempDir tmp;
  const fs::path dir = tmp / "pipe";
  fs::copy(tiny_sdxl_pipeline_dir(), dir, fs::copy_options::recursive);
  std::ofstream(dir / "model_index.json") << R"({"_class_name": "StableDiffusionPipeline"})";
  try {
    diffusion::SdxlPipeline::load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model_index.json"), std::string::npos) << e.what();
  }
  fs::copy_file(tiny_sdxl_pipeline_dir() / "model_index.json", dir / "model_index.json",
                fs::copy_options::overwrite_existing);
  std::ofstream(dir / "scheduler" / "scheduler_config.json")
      << R"({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true})";
  try {
    diffusion::SdxlPipeline::load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use_karras_sigmas"), std::string::npos) << e.what();
  }
}

TEST(SdxlPipeline, ChecksThatAUNetFitsTheEncoders) {
  auto pipe = diffusion::SdxlPipeline::load(tiny_sdxl_pipeline_dir());
  // tiny-sdxl's U-Net reads 32-wide text states; these encoders give 16 + 24 = 40.
  auto other = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  try {
    pipe.set_unet(other);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cross_attention_dim"), std::string::npos) << e.what();
  }
}
