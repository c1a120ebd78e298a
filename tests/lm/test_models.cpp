// Tests of what loading the papers' real checkpoints needs beyond the parity runs in
// test_lm.cpp (which cover the rope-* and olmo2 fixtures like the other families): RoPE scaling
// read from either config spelling transformers has used, one-line errors for RoPE settings
// Concord does not implement, checkpoints mapped rather than copied (parameters that are views
// of the file, and memory of their own only for the fused projections), bf16 scoring and
// generation on the mapped weights, and model construction that draws nothing when a loader
// will replace every parameter.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/io/safetensors.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/lm/score.h"
#include "concord/nn/init.h"
#include "lm_fixtures.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace concord::lm;
using concord::Json;
using concord::testing::fixture;
using concord::testing::lm_reference;
using concord::testing::max_abs_diff;
using concord::testing::TempDir;

namespace {

// The address ranges at which `file` is mapped into this process (/proc/self/maps).
std::vector<std::pair<uintptr_t, uintptr_t>> mappings_of(const fs::path& file) {
  const std::string wanted = fs::canonical(file).string();
  std::vector<std::pair<uintptr_t, uintptr_t>> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos || line.substr(slash) != wanted) continue;
    std::istringstream range(line.substr(0, line.find(' ')));
    std::string lo, hi;
    std::getline(range, lo, '-');
    std::getline(range, hi);
    out.emplace_back(std::stoull(lo, nullptr, 16), std::stoull(hi, nullptr, 16));
  }
  return out;
}

bool is_view_of(const at::Tensor& t, const std::vector<std::pair<uintptr_t, uintptr_t>>& maps) {
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(t.numel() * t.element_size());
  for (const auto& [lo, hi] : maps) {
    if (begin >= lo && end <= hi) return true;
  }
  return false;
}

Json read_config(const std::string& name) {
  return concord::load_json_file(fixture("lm/" + name + "/config.json"));
}

std::string message_of(const Json& config, const std::string& file_name) {
  TempDir tmp;
  const fs::path path = tmp / file_name;
  std::ofstream(path) << config.dump(2);
  try {
    load_any_model_config(path);
  } catch (const concord::FormatError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// ---- RoPE settings from config.json ----------------------------------------------------------

TEST(ModelConfig, RopeScalingReadsFromEitherSpelling) {
  const ModelConfig llama3 = load_any_model_config(fixture("lm/rope-llama3"));
  EXPECT_EQ(llama3.rope_scaling.type, concord::nn::RopeType::Llama3);
  EXPECT_DOUBLE_EQ(llama3.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(llama3.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(llama3.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(llama3.rope_scaling.original_max_position_embeddings, 64);
  const ModelConfig yarn = load_any_model_config(fixture("lm/rope-yarn"));
  EXPECT_EQ(yarn.rope_scaling.type, concord::nn::RopeType::Yarn);
  EXPECT_EQ(yarn.rope_scaling.original_max_position_embeddings, 256);
  EXPECT_DOUBLE_EQ(yarn.rope_scaling.beta_fast, 32.0);
  EXPECT_FALSE(yarn.rope_scaling.attention_factor.has_value());
  const ModelConfig dynamic = load_any_model_config(fixture("lm/rope-dynamic"));
  EXPECT_EQ(dynamic.rope_scaling.type, concord::nn::RopeType::Dynamic);
  EXPECT_EQ(dynamic.rope_scaling.max_position_embeddings, 16);

  // transformers 4's spelling, as the Llama-3.1 checkpoints on the hub have it: rope_theta at
  // the top level and rope_scaling with "rope_type" (or the older "type"), no rope_parameters.
  for (const std::string name : {"rope-llama3", "rope-linear", "rope-dynamic", "rope-yarn"}) {
    Json j = read_config(name);
    Json scaling = j["rope_parameters"];
    j["rope_theta"] = scaling["rope_theta"];
    scaling.erase("rope_theta");
    if (name == "rope-linear" || name == "rope-dynamic") {
      scaling["type"] = scaling["rope_type"];
      scaling.erase("rope_type");
    }
    j.erase("rope_parameters");
    j["rope_scaling"] = scaling;
    const ModelConfig old = model_config_from_hf(j, name + " (rope_scaling)");
    const ModelConfig now = load_any_model_config(fixture("lm/" + name));
    EXPECT_EQ(model_config_to_json(old), model_config_to_json(now)) << name;
    // rope_scaling wins over rope_parameters when both are there (transformers' order).
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1.0}};
    EXPECT_EQ(model_config_to_json(model_config_from_hf(j, name)), model_config_to_json(now))
        << name;
    // And what Concord writes reads back the same, in both of its own formats.
    EXPECT_EQ(model_config_to_json(model_config_from_hf(model_config_to_hf(now), name)),
              model_config_to_json(now))
        << name;
    EXPECT_EQ(model_config_to_json(model_config_from_json(model_config_to_json(now), name)),
              model_config_to_json(now))
        << name;
  }
  // A null rope_scaling (Qwen2.5, Mistral) is no scaling.
  Json j = read_config("llama");
  j["rope_scaling"] = nullptr;
  EXPECT_EQ(model_config_from_hf(j, "llama").rope_scaling.type, concord::nn::RopeType::Default);
}

TEST(ModelConfig, UnsupportedRopeSettingsNameTheFileAndKey) {
  Json j = read_config("rope-llama3");
  j["rope_parameters"]["rope_type"] = "longrope";
  std::string msg = message_of(j, "config.json");
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rope_parameters.rope_type"), std::string::npos) << msg;
  EXPECT_NE(msg.find("longrope"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  // The transformers-4 spelling names its own key.
  Json old = read_config("rope-linear");
  old.erase("rope_parameters");
  old["rope_scaling"] = {{"type", "su"}, {"factor", 2.0}};
  msg = message_of(old, "old.json");
  EXPECT_NE(msg.find("old.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rope_scaling.type"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'su'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;

  // A required parameter of a known type.
  Json missing = read_config("rope-llama3");
  missing["rope_parameters"].erase("low_freq_factor");
  msg = message_of(missing, "m.json");
  EXPECT_NE(msg.find("rope_parameters.low_freq_factor"), std::string::npos) << msg;
  // Partial rotary embeddings are not implemented.
  Json partial = read_config("rope-linear");
  partial["rope_parameters"]["partial_rotary_factor"] = 0.5;
  msg = message_of(partial, "p.json");
  EXPECT_NE(msg.find("partial_rotary_factor"), std::string::npos) << msg;
  // load_pretrained reports it the same way, before reading any weight.
  TempDir tmp;
  fs::copy_file(fixture("lm/rope-llama3/model.safetensors"), tmp / "model.safetensors");
  std::ofstream(tmp / "config.json") << j.dump(2);
  try {
    load_pretrained(tmp.path());
    ADD_FAILURE() << "expected FormatError";
  } catch (const concord::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find((tmp / "config.json").string()), std::string::npos);
  }
}

TEST(ModelConfig, Olmo2ReadsAsPostNormWithQkNorm) {
  const ModelConfig c = load_any_model_config(fixture("lm/olmo2"));
  EXPECT_EQ(c.family, ModelFamily::Olmo2);
  EXPECT_TRUE(c.post_norm && c.qk_norm);
  EXPECT_FALSE(c.tie_word_embeddings || c.qkv_bias || c.attn_out_bias || c.mlp_bias);
  // Per layer: q/k/v/o at 32 -> 4x8 / 2x8 heads, SwiGLU of width 32, two norms of 32 and the q
  // (32) and k (16) norms; untied 64 x 32 embedding and head; a final norm.
  const int64_t d = 32, V = 64, I = 32, q = 32, kv = 16;
  const int64_t layer = d * (q + 2 * kv) + q * d + 3 * d * I + 2 * d + q + kv;
  EXPECT_EQ(count_parameters(c), 2 * V * d + 2 * layer + d);
  EXPECT_EQ(CausalLM(c)->num_parameters(), count_parameters(c));
  // Concord's own config format spells it as a family with the two switches on.
  const ModelConfig own = model_config_from_json(model_config_to_json(c), "<olmo2>");
  EXPECT_EQ(model_config_to_json(own), model_config_to_json(c));
  Json bad = model_config_to_json(c);
  bad["family"] = "pangu_pi";
  bad["augmented_shortcut"]["paths"] = 1;
  EXPECT_THROW(model_config_from_json(bad, "<pangu post-norm>"), concord::FormatError);
}

// ---- mapped loading --------------------------------------------------------------------------

// The parameters stored as one tensor of the wanted dtype are views of the mapped file; the
// fused q|k|v and gate|up projections have memory of their own; with map_weights off, nothing
// is mapped. Writing a mapped parameter never reaches the file.
TEST(CausalLM, LoadMapsSingleTensorParametersOntoTheFile) {
  const fs::path file = fixture("lm/llama/model.safetensors");
  {
    auto model = load_pretrained(fixture("lm/llama"));
    const auto maps = mappings_of(file);
    ASSERT_FALSE(maps.empty()) << "the checkpoint is not mapped";
    auto* block = model->layers->ptr<TransformerBlockImpl>(0).get();
    EXPECT_TRUE(is_view_of(model->embed->weight, maps));
    EXPECT_TRUE(is_view_of(model->lm_head->weight, maps));
    EXPECT_TRUE(is_view_of(model->rms_final->weight, maps));
    EXPECT_TRUE(is_view_of(block->attn->out->weight, maps));
    EXPECT_TRUE(is_view_of(block->mlp->fc_out->weight, maps));
    EXPECT_TRUE(is_view_of(block->rms_attn->weight, maps));
    EXPECT_FALSE(is_view_of(block->attn->qkv->weight, maps));
    EXPECT_FALSE(is_view_of(block->mlp->fc_in->weight, maps));
    // Copy-on-write: the model may train in place; the file keeps its bytes.
    const at::Tensor before = model->embed->weight.clone();
    {
      torch::NoGradGuard g;
      model->embed->weight.add_(1.0);
    }
    auto again = load_pretrained(fixture("lm/llama"));
    EXPECT_TRUE(torch::equal(again->embed->weight, before));
    EXPECT_TRUE(torch::equal(model->embed->weight, before + 1.0));
  }
  LoadOptions copy;
  copy.map_weights = false;
  auto model = load_pretrained(fixture("lm/llama"), copy);
  EXPECT_TRUE(mappings_of(file).empty()) << "copied parameters must not keep the file mapped";
  auto ref = lm_reference("llama");
  torch::NoGradGuard g;
  EXPECT_LT(max_abs_diff(model->forward(ref["input_ids"]), ref["logits"]), 1e-4);
}

// A bf16 checkpoint loaded as bf16: mapped, and scoring and greedy generation run in bf16 on the
// mapped weights, close to the same model in fp32. Loaded as fp32, it converts (nothing mapped)
// and equals the fp32 model with the bf16-rounded weights.
TEST(CausalLM, Bf16CheckpointLoadsMappedAndScoresAndGenerates) {
  for (const std::string name : {"rope-llama3", "olmo2", "qwen2"}) {
    TempDir tmp;
    {
      auto fp32 = load_pretrained(fixture("lm/" + name));
      fp32->to(at::kBFloat16);
      save_pretrained(fp32, tmp.path());
    }
    LoadOptions bf16;
    bf16.dtype = at::kBFloat16;
    auto model = load_pretrained(tmp.path(), bf16);
    const auto maps = mappings_of(tmp / "model.safetensors");
    ASSERT_FALSE(maps.empty()) << name;
    EXPECT_TRUE(is_view_of(model->embed->weight, maps)) << name;
    for (const auto& p : model->parameters()) EXPECT_EQ(p.scalar_type(), at::kBFloat16) << name;
    auto widened = load_pretrained(tmp.path());  // fp32 from the bf16 file
    EXPECT_FALSE(is_view_of(widened->embed->weight, mappings_of(tmp / "model.safetensors")));
    EXPECT_EQ(widened->embed->weight.scalar_type(), at::kFloat);
    EXPECT_TRUE(torch::equal(widened->embed->weight, model->embed->weight.to(at::kFloat)));

    auto ref = lm_reference(name);
    {
      torch::NoGradGuard g;
      const at::Tensor logits = model->forward(ref["input_ids"], ref["attention_mask"]);
      EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
      const at::Tensor want = widened->forward(ref["input_ids"], ref["attention_mask"]);
      // bf16 keeps 8 bits of mantissa: logits of order 1-10 agree to a few hundredths.
      const double scale = want.abs().max().item<double>();
      EXPECT_LT(max_abs_diff(logits, want), 0.05 * scale) << name;
    }
    const auto prompt_t = ref["prompt_ids"][0].to(at::kLong).contiguous();
    const std::vector<int64_t> prompt(prompt_t.data_ptr<int64_t>(),
                                      prompt_t.data_ptr<int64_t>() + prompt_t.numel());
    GenerationOptions o;
    o.max_new_tokens = 4;
    const auto out = generate(model, {prompt}, o);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_FALSE(out[0].tokens.empty()) << name;
    const std::vector<int64_t> cont(prompt.begin() + 4, prompt.end());
    const std::vector<int64_t> head(prompt.begin(), prompt.begin() + 4);
    const auto s16 = score_continuations(model, {head}, {cont})[0];
    const auto s32 = score_continuations(widened, {head}, {cont})[0];
    EXPECT_TRUE(std::isfinite(s16.sum)) << name;
    EXPECT_NEAR(s16.mean, s32.mean, 0.05 * std::abs(s32.mean) + 0.05) << name;
  }
}

// ---- construction without initialisation ---------------------------------------------------

// Building under a SkipInitGuard draws no random number (the stream after it is the stream
// without it) and the loader then fills every parameter.
TEST(CausalLM, SkipInitBuildsWithoutDrawing) {
  const ModelConfig c = load_any_model_config(fixture("lm/rope-llama3"));
  torch::manual_seed(11);
  const at::Tensor plain = torch::rand({4});
  torch::manual_seed(11);
  {
    concord::nn::SkipInitGuard skip;
    CausalLM model(c);
    EXPECT_EQ(model->num_parameters(), count_parameters(c));
  }
  EXPECT_TRUE(torch::equal(torch::rand({4}), plain));
  EXPECT_FALSE(concord::nn::skip_init_enabled());
  // Without the guard the same model draws its weights.
  torch::manual_seed(11);
  { CausalLM model(c); }
  EXPECT_FALSE(torch::equal(torch::rand({4}), plain));
}

// The rope-* fixtures exercise their scaling: the same weights with plain RoPE miss
// transformers' logits by far more than the parity tolerance (1e-4).
TEST(CausalLM, RopeFixturesDependOnTheirScaling) {
  for (const std::string name : {"rope-llama3", "rope-linear", "rope-dynamic", "rope-yarn"}) {
    TempDir tmp;
    fs::copy_file(fixture("lm/" + name + "/model.safetensors"), tmp / "model.safetensors");
    Json j = read_config(name);
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", j["rope_parameters"]["rope_theta"]}};
    std::ofstream(tmp / "config.json") << j.dump(2);
    auto plain = load_pretrained(tmp.path());
    auto ref = lm_reference(name);
    torch::NoGradGuard g;
    EXPECT_GT(max_abs_diff(plain->forward(ref["input_ids"]), ref["logits"]), 1e-2) << name;
  }
}
