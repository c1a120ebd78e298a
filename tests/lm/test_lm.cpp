// Tests of the lm layer: exact parameter counts, config validation, parity with transformers on
// the tiny random-weight models in tests/fixtures/lm (made by scripts/fixtures/make_lm_fixtures.py),
// KV-cache decoding, save/load round trips, generation (greedy parity, batching, sampling, stop
// strings), log-prob scoring, and PanGu-π's identity-preserving initialisation.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <set>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/io/safetensors.h"
#include "concord/io/safetensors_sharded.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/lm/repeated_prefix.h"
#include "concord/lm/score.h"
#include "concord/ops/fused.h"
#include "concord/ops/linear_cross_entropy.h"
#include "lm_fixtures.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace concord::lm;
using concord::testing::fixture;
using concord::testing::lm_reference;
using concord::testing::max_abs_diff;
using concord::testing::TempDir;

namespace {

// The four base families, then OLMo-2 and one model per RoPE scaling type (rope-yarn is a Qwen2,
// the other three Llamas).
const std::vector<std::string> kFamilies = {"gpt2",        "llama",       "mistral",
                                            "qwen2",       "olmo2",       "rope-llama3",
                                            "rope-linear", "rope-dynamic", "rope-yarn"};

// Dynamic NTK scaling picks its frequencies from the longest position in the pass (as
// transformers does), so a sequence past the context decodes differently step by step than in
// one pass, and a batch row is rotated by its longest neighbour's frequencies: the models where
// cached and batched runs equal the one-pass, one-row run.
bool length_invariant(const std::string& family) { return family != "rope-dynamic"; }

std::vector<int64_t> row(const at::Tensor& t, int64_t r, int64_t begin = 0, int64_t end = -1) {
  const at::Tensor x = t[r].to(at::kLong).contiguous();
  if (end < 0) end = x.size(0);
  return std::vector<int64_t>(x.data_ptr<int64_t>() + begin, x.data_ptr<int64_t>() + end);
}

ModelConfig config_from(const std::string& json) {
  return model_config_from_json(concord::parse_json(json, "<test>"), "<test>");
}

ModelConfig tiny_pangu() {
  return config_from(R"({"family": "pangu_pi", "vocab_size": 97, "hidden_size": 32,
    "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 48,
    "max_position_embeddings": 64, "eos_token_id": 2, "pad_token_id": 0,
    "siaf": {"terms": 3, "neighbour_kernel": 3},
    "augmented_shortcut": {"paths": 2, "reduction": 8}})");
}

// Moves SIAF and the shortcuts off their identity initialisation, so they matter.
void perturb_pangu(CausalLM& model) {
  torch::NoGradGuard g;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    if (name.find("siaf") != std::string::npos || name.find("shortcut") != std::string::npos) {
      item.value().add_(torch::randn(item.value().sizes()) * 0.3);
    }
  }
}

// Ids 0..25 print as letters: a tokenizer for stop-string tests that never merges tokens.
class LetterTokenizer : public concord::text::Tokenizer {
 public:
  std::vector<concord::text::TokenId> encode(std::string_view text, bool) const override {
    std::vector<concord::text::TokenId> out;
    for (char c : text) out.push_back(c - 'a');
    return out;
  }
  std::string decode(const std::vector<concord::text::TokenId>& ids, bool) const override {
    std::string s;
    for (auto id : ids) s += static_cast<char>('a' + id % 26);
    return s;
  }
  int64_t vocab_size() const override { return 26; }
  std::optional<concord::text::TokenId> token_to_id(std::string_view) const override { return {}; }
  std::string id_to_token(concord::text::TokenId id) const override { return decode({id}, false); }
};

}  // namespace

// ---- parameter counts and configs ----------------------------------------------------------

TEST(ModelConfig, ParameterCountsAreExact) {
  const fs::path models = ::concord::testing::source_dir() / "configs" / "models";
  EXPECT_EQ(count_parameters(load_model_config(models / "gpt2.json")), 124439808);
  // PanGu-π-1B: untied 100883-token embedding and head, 12 blocks of d = 2048 with full
  // attention (4 d^2), SwiGLU of width 5632 (3 d I), SIAF a and b for n = 2 (4 I), one
  // augmented shortcut with d/r = 64 (2 * 64 d + 64 + d), two RMSNorms (2 d); a final RMSNorm.
  {
    const int64_t V = 100883, d = 2048, L = 12, I = 5632, h = 64;
    const int64_t want = 2 * V * d + L * (4 * d * d + 3 * d * I + 4 * I + 2 * h * d + h + d + 2 * d) + d;
    EXPECT_EQ(count_parameters(load_model_config(models / "pangu-pi-1b.json")), want);
    EXPECT_EQ(want, 1033272064);
  }
  {
    const int64_t V = 100883, d = 4096, L = 29, I = 11008, h = 128;
    const int64_t want = 2 * V * d + L * (4 * d * d + 3 * d * I + 4 * I + 2 * h * d + h + d + 2 * d) + d;
    EXPECT_EQ(count_parameters(load_model_config(models / "pangu-pi-7b.json")), want);
    EXPECT_EQ(want, 6727363200);
  }
  // The count from the config equals the built model's, for every shipped config small enough.
  for (const char* name : {"gpt2.json", "tiny-gpt2.json", "tiny-llama.json", "tiny-pangu-pi.json"}) {
    const auto config = load_model_config(models / name);
    CausalLM model(config);
    EXPECT_EQ(model->num_parameters(), count_parameters(config)) << name;
    int64_t sum = 0;
    for (const auto& [part, n] : count_parameters_by_module(config)) sum += n;
    EXPECT_EQ(sum, count_parameters(config)) << name;
  }
  // And for every fixture, the count transformers reported when it made the model.
  const auto summary = concord::load_json_file(fixture("lm/summary.json"));
  for (const auto& family : kFamilies) {
    const auto config = load_any_model_config(fixture("lm/" + family));
    EXPECT_EQ(count_parameters(config), summary["models"][family]["parameters"].get<int64_t>())
        << family;
  }
}

TEST(ModelConfig, UnknownKeysAndBadValuesNameTheFileAndKey) {
  TempDir tmp;
  auto bad = concord::testing::write_file(
      tmp / "m.json", R"({"family": "llama", "vocab_size": 10, "hiden_size": 8, "num_layers": 1,
                           "num_heads": 2})");
  try {
    load_model_config(bad);
    FAIL() << "expected FormatError";
  } catch (const concord::FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("m.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("hiden_size"), std::string::npos) << msg;
  }
  auto family = concord::testing::write_file(
      tmp / "f.json", R"({"family": "gpt5", "vocab_size": 10, "hidden_size": 8, "num_layers": 1,
                           "num_heads": 2})");
  EXPECT_THROW(load_model_config(family), concord::FormatError);
  auto heads = concord::testing::write_file(
      tmp / "h.json", R"({"family": "llama", "vocab_size": 10, "hidden_size": 8, "num_layers": 1,
                           "num_heads": 4, "num_kv_heads": 3})");
  EXPECT_THROW(load_model_config(heads), concord::FormatError);
}

TEST(ModelConfig, HuggingFaceConfigsReadAndRoundTrip) {
  const auto llama = load_any_model_config(fixture("lm/llama"));
  EXPECT_EQ(llama.family, ModelFamily::Llama);
  EXPECT_EQ(llama.num_kv_heads, 2);
  EXPECT_EQ(llama.head_dim, 16);  // given explicitly, != 32 / 4
  EXPECT_DOUBLE_EQ(llama.rope_theta, 500000.0);  // from rope_parameters
  EXPECT_DOUBLE_EQ(llama.norm_eps, 1e-5);
  EXPECT_FALSE(llama.tie_word_embeddings);
  const auto mistral = load_any_model_config(fixture("lm/mistral"));
  EXPECT_EQ(mistral.sliding_window, 5);
  const auto qwen = load_any_model_config(fixture("lm/qwen2"));
  EXPECT_TRUE(qwen.qkv_bias);
  EXPECT_FALSE(qwen.attn_out_bias);
  EXPECT_TRUE(qwen.tie_word_embeddings);
  const auto gpt2 = load_any_model_config(fixture("lm/gpt2"));
  EXPECT_TRUE(gpt2.layer_norm && gpt2.learned_positions && gpt2.tie_word_embeddings);
  EXPECT_EQ(gpt2.intermediate_size, 128);
  for (const auto& c : {llama, mistral, qwen, gpt2, tiny_pangu()}) {
    const auto back = model_config_from_hf(model_config_to_hf(c), "<round trip>");
    EXPECT_EQ(model_config_to_json(back), model_config_to_json(c));
  }
  auto j = model_config_to_hf(llama);
  j["rope_parameters"]["rope_type"] = "longrope";
  EXPECT_THROW(model_config_from_hf(j, "cfg.json"), concord::FormatError);
}

// ---- parity with transformers --------------------------------------------------------------

TEST(CausalLM, LogitsMatchTransformers) {
  for (const auto& family : kFamilies) {
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    torch::NoGradGuard g;
    const auto logits = model->forward(ref["input_ids"], ref["attention_mask"]);
    const double full = max_abs_diff(logits, ref["logits"]);
    EXPECT_LT(full, 1e-4) << family;
    // Left padding: compare real positions only (pad rows are garbage in both).
    const auto padded = model->forward(ref["padded_ids"], ref["padded_mask"]);
    const auto keep = ref["padded_mask"].to(at::kDouble).unsqueeze(-1);
    const double pad = ((padded.to(at::kDouble) - ref["padded_logits"].to(at::kDouble)) * keep)
                           .abs().max().item<double>();
    EXPECT_LT(pad, 1e-4) << family;
    std::cout << "[parity] " << family << " max|diff| logits " << full << ", left-padded " << pad
              << ", |logits| max " << ref["logits"].abs().max().item<float>() << "\n";
  }
}

TEST(CausalLM, KVCacheDecodingEqualsFullForward) {
  for (const auto& family : kFamilies) {
    if (!length_invariant(family)) continue;
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    torch::NoGradGuard g;
    for (const char* which : {"input_ids", "padded_ids"}) {
      const auto ids = ref[which];
      const auto mask = ref[std::string(which) == "input_ids" ? "attention_mask" : "padded_mask"];
      const auto full = model->forward(ids, mask);
      auto cache = model->make_cache();
      std::vector<at::Tensor> parts{model->forward(ids.narrow(1, 0, 3), mask.narrow(1, 0, 3), &cache)};
      for (int64_t t = 3; t < ids.size(1); ++t) {
        parts.push_back(model->forward(ids.narrow(1, t, 1), mask.narrow(1, 0, t + 1), &cache));
      }
      const auto keep = mask.to(at::kDouble).unsqueeze(-1);
      const auto cached = torch::cat(parts, 1).to(at::kDouble);
      const double d = ((cached - full.to(at::kDouble)) * keep).abs().max().item<double>();
      // fp32 rounding of differently shaped products; the 20-token fixtures (rope-*, olmo2)
      // accumulate more of it (measured up to 1.3e-5) than the 8-token ones (3e-6).
      EXPECT_LT(d, ids.size(1) > 8 ? 3e-5 : 1e-5) << family << " " << which;
      // And the cached run is transformers' full forward too.
      const auto want = ref[std::string(which) == "input_ids" ? "logits" : "padded_logits"];
      EXPECT_LT(((cached - want.to(at::kDouble)) * keep).abs().max().item<double>(), 1e-4)
          << family << " " << which;
    }
  }
}

// Padded, cached and packed batches run the fused attention op with segment ids; the composite
// with a materialised mask (fused ops off) is the reference, at every real position, with
// gradients for the packed case (the SFT path).
TEST(CausalLM, PaddedCachedAndPackedBatchesMatchTheComposite) {
  using concord::ops::FusedOpsGuard;
  for (const auto& family : kFamilies) {
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    const auto ids = ref["padded_ids"], mask = ref["padded_mask"];
    const auto keep = mask.to(at::kDouble).unsqueeze(-1);
    auto run = [&](bool fused) {
      FusedOpsGuard guard(fused);
      torch::NoGradGuard g;
      auto cache = model->make_cache();
      const auto prefix = model->forward(ids.narrow(1, 0, 4), mask.narrow(1, 0, 4), &cache);
      const auto rest = model->forward(ids.narrow(1, 4, ids.size(1) - 4), mask, &cache);
      return std::make_pair(model->forward(ids, mask), torch::cat({prefix, rest}, 1));
    };
    const auto [fused_full, fused_cached] = run(true);
    const auto [plain_full, plain_cached] = run(false);
    EXPECT_LT((((fused_full - plain_full).to(at::kDouble)) * keep).abs().max().item<double>(), 1e-5)
        << family;
    EXPECT_LT((((fused_cached - plain_cached).to(at::kDouble)) * keep).abs().max().item<double>(),
              1e-5)
        << family;

    // Packed rows: two segments and a padded tail in one row (5 tokens: mistral's fixture has
    // a sliding window of 5, and packed rows must fit in it).
    const auto packed = ref["input_ids"].narrow(0, 0, 1).narrow(1, 0, 5);
    const auto segments = torch::tensor({{1, 1, 2, 2, 0}}, torch::kLong);
    auto packed_loss = [&](bool fused) {
      FusedOpsGuard guard(fused);
      model->zero_grad();
      const auto logits = model->forward(packed, {}, nullptr, {}, segments);
      logits.narrow(1, 0, 4).logsumexp(-1).sum().backward();
      std::vector<at::Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
      return std::make_pair(logits.narrow(1, 0, 4).detach(), grads);
    };
    const auto [fused_logits, fused_grads] = packed_loss(true);
    const auto [plain_logits, plain_grads] = packed_loss(false);
    EXPECT_LT(max_abs_diff(fused_logits, plain_logits), 1e-5) << family;
    double grad_diff = 0;
    for (size_t i = 0; i < fused_grads.size(); ++i) {
      grad_diff = std::max(grad_diff, max_abs_diff(fused_grads[i], plain_grads[i]));
    }
    EXPECT_LT(grad_diff, 1e-5) << family;
    model->zero_grad();
  }
}

// token_loss (the LM head and cross-entropy fused, ops::linear_cross_entropy) against
// cross-entropy on forward()'s logits: loss and every parameter's gradient, tied heads (gpt2,
// qwen2 fixtures) and untied ones alike, with ignored targets.
TEST(CausalLM, TokenLossMatchesCrossEntropyOnTheLogits) {
  for (const auto& family : kFamilies) {
    auto model = load_pretrained(fixture("lm/" + family));
    const auto ids = lm_reference(family)["input_ids"];
    at::Tensor targets = ids.roll(-1, 1).clone();
    targets.select(1, targets.size(1) - 1).fill_(-100);
    targets[0][1] = -100;
    auto grads_of = [&](const at::Tensor& loss) {
      model->zero_grad();
      loss.backward();
      std::vector<at::Tensor> grads;
      for (const auto& p : model->parameters()) grads.push_back(p.grad().clone());
      return grads;
    };
    ASSERT_TRUE(concord::ops::linear_cross_entropy_is_fused(model->hidden_states(ids),
                                                            model->lm_head_weight()));
    const at::Tensor fused = model->token_loss(model->hidden_states(ids), targets);
    const auto fused_grads = grads_of(fused);
    const at::Tensor logits = model->forward(ids);
    const at::Tensor plain =
        at::cross_entropy_loss(logits.view({-1, logits.size(-1)}), targets.view({-1}));
    const auto plain_grads = grads_of(plain);
    EXPECT_NEAR(fused.item<double>(), plain.item<double>(), 1e-5) << family;
    for (size_t i = 0; i < fused_grads.size(); ++i) {
      EXPECT_LT(max_abs_diff(fused_grads[i], plain_grads[i]), 1e-5) << family << " parameter " << i;
    }
    const at::Tensor summed = model->token_loss(model->hidden_states(ids), targets,
                                                at::Reduction::Sum);
    EXPECT_NEAR(summed.item<double>(), plain.item<double>() * targets.ne(-100).sum().item<double>(),
                1e-4)
        << family;
    model->zero_grad();
  }
}

TEST(CausalLM, SaveLoadRoundTripIsExact) {
  for (const auto& family : kFamilies) {
    auto model = load_pretrained(fixture("lm/" + family));
    TempDir tmp;
    save_pretrained(model, tmp.path());
    ASSERT_TRUE(fs::exists(tmp / "model.safetensors")) << family;
    // The written tensors are transformers' tensors, bit for bit.
    const auto original = concord::io::load_safetensors_checkpoint(fixture("lm/" + family));
    const auto written = concord::io::load_safetensors(tmp / "model.safetensors");
    ASSERT_EQ(written.size(), original.size()) << family;
    for (const auto& [name, t] : original) {
      ASSERT_TRUE(written.count(name)) << family << " " << name;
      EXPECT_TRUE(torch::equal(written.at(name), t)) << family << " " << name;
    }
    auto again = load_pretrained(tmp.path());
    auto ref = lm_reference(family);
    torch::NoGradGuard g;
    EXPECT_TRUE(torch::equal(again->forward(ref["input_ids"]), model->forward(ref["input_ids"])));
    // Sharded: several files behind an index, same model.
    TempDir sharded;
    save_pretrained(model, sharded.path(), 40000);
    ASSERT_TRUE(fs::exists(sharded / concord::io::kSafetensorsIndexName)) << family;
    auto from_shards = load_pretrained(sharded.path());
    EXPECT_TRUE(torch::equal(from_shards->forward(ref["input_ids"]), model->forward(ref["input_ids"])));
  }
}

TEST(CausalLM, BadCheckpointsNameTheTensor) {
  auto model = load_pretrained(fixture("lm/llama"));
  const auto good = to_hf_state_dict(model);
  auto expect_error = [&](std::map<std::string, at::Tensor> tensors, const std::string& needle) {
    TempDir tmp;
    fs::copy_file(fixture("lm/llama/config.json"), tmp / "config.json");
    concord::io::save_safetensors(tmp / "model.safetensors", tensors);
    try {
      load_pretrained(tmp.path());
      ADD_FAILURE() << "expected FormatError mentioning " << needle;
    } catch (const concord::FormatError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    }
  };
  auto missing = good;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  expect_error(missing, "model.layers.1.mlp.up_proj.weight");
  auto shape = good;
  shape["model.layers.0.self_attn.k_proj.weight"] = torch::zeros({16, 16});
  expect_error(shape, "model.layers.0.self_attn.k_proj.weight");
  auto extra = good;
  extra["model.layers.2.mlp.up_proj.weight"] = torch::zeros({4});
  expect_error(extra, "model.layers.2.mlp.up_proj.weight");
}

// ---- generation ----------------------------------------------------------------------------

TEST(Generate, GreedyMatchesTransformersGenerate) {
  for (const auto& family : kFamilies) {
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    GenerationOptions o;
    o.max_new_tokens = 12;
    o.stop_token_ids = {2};
    const auto prompt = row(ref["prompt_ids"], 0);
    const auto out = generate(model, {prompt}, o);
    std::vector<int64_t> got = prompt;
    got.insert(got.end(), out[0].tokens.begin(), out[0].tokens.end());
    EXPECT_EQ(got, row(ref["greedy_ids"], 0)) << family;
    const bool stopped = got.back() == 2;
    EXPECT_EQ(out[0].finish_reason, stopped ? "stop_token" : "length") << family;
  }
}

TEST(Generate, BatchedLeftPaddedEqualsOneByOne) {
  for (const auto& family : kFamilies) {
    if (!length_invariant(family)) continue;
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    const std::vector<std::vector<int64_t>> prompts = {
        row(ref["input_ids"], 0, 0, 3), row(ref["input_ids"], 1, 0, 8), row(ref["padded_ids"], 0, 2, 7)};
    GenerationOptions o;
    o.max_new_tokens = 10;
    const auto batched = generate(model, prompts, o);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto alone = generate(model, {prompts[i]}, o);
      EXPECT_EQ(batched[i].tokens, alone[0].tokens) << family << " prompt " << i;
      EXPECT_EQ(batched[i].finish_reason, alone[0].finish_reason);
    }
  }
}

TEST(Generate, LogitsProcessorsFollowTransformers) {
  const auto logits = torch::tensor({{0.0f, 1.0f, 2.0f, 3.0f}});
  at::Generator gen = at::detail::createCPUGenerator(3);
  GenerationOptions o;
  EXPECT_EQ(select_next_tokens(logits, o, gen).item<int64_t>(), 3);
  o.do_sample = true;
  // softmax = [.032, .087, .237, .644]; ascending cumulative [.032, .119, .356, 1]:
  // top_p = 0.5 drops everything <= 0.5 but the top token; top_p = 0.7 keeps {2, 3}.
  o.top_p = 0.5;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(select_next_tokens(logits, o, gen).item<int64_t>(), 3);
  o.top_p = 0.7;
  std::set<int64_t> seen;
  for (int i = 0; i < 200; ++i) seen.insert(select_next_tokens(logits, o, gen).item<int64_t>());
  EXPECT_EQ(seen, (std::set<int64_t>{2, 3}));
  o.top_p = 1.0;
  o.top_k = 2;
  seen.clear();
  for (int i = 0; i < 200; ++i) seen.insert(select_next_tokens(logits, o, gen).item<int64_t>());
  EXPECT_EQ(seen, (std::set<int64_t>{2, 3}));
  // A tiny temperature is greedy.
  o.top_k = 0;
  o.temperature = 1e-3;
  for (int i = 0; i < 50; ++i) EXPECT_EQ(select_next_tokens(logits, o, gen).item<int64_t>(), 3);
}

TEST(Generate, SamplingIsSeededAndTopKOneIsGreedy) {
  auto model = load_pretrained(fixture("lm/llama"));
  auto ref = lm_reference("llama");
  const auto prompt = row(ref["prompt_ids"], 0);
  GenerationOptions greedy;
  greedy.max_new_tokens = 8;
  greedy.stop_token_ids = {-1};
  GenerationOptions sample = greedy;
  sample.do_sample = true;
  sample.top_k = 1;
  EXPECT_EQ(generate(model, {prompt}, sample)[0].tokens, generate(model, {prompt}, greedy)[0].tokens);
  sample.top_k = 0;
  sample.temperature = 1.5;
  sample.seed = 11;
  const auto a = generate(model, {prompt, prompt}, sample);
  const auto b = generate(model, {prompt, prompt}, sample);
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  EXPECT_EQ(a[1].tokens, b[1].tokens);
  EXPECT_EQ(a[0].tokens.size(), 8u);
}

TEST(Generate, StopStringsCutTheText) {
  auto model = load_pretrained(fixture("lm/qwen2"));
  auto ref = lm_reference("qwen2");
  LetterTokenizer letters;
  GenerationOptions o;
  o.max_new_tokens = 12;
  o.stop_token_ids = {-1};
  const auto prompt = row(ref["prompt_ids"], 0);
  const auto free = generate(model, {prompt}, o, &letters)[0];
  ASSERT_EQ(free.text.size(), 12u);
  const std::string stop = free.text.substr(5, 3);
  const size_t at = free.text.find(stop);
  o.stop_strings = {stop, "this never appears"};
  const auto cut = generate(model, {prompt}, o, &letters)[0];
  EXPECT_EQ(cut.finish_reason, "stop_string");
  EXPECT_EQ(cut.text, free.text.substr(0, at));
  EXPECT_EQ(cut.tokens.size(), at + 3);
  o.stop_strings.clear();
  EXPECT_THROW(generate(model, {std::vector<int64_t>{}}, o), concord::Error);
}

// ---- scoring -------------------------------------------------------------------------------

TEST(Score, ContinuationLogProbsMatchReferenceLogits) {
  for (const auto& family : kFamilies) {
    if (!length_invariant(family)) continue;  // scores 8 tokens against a 20-token reference
    auto model = load_pretrained(fixture("lm/" + family));
    auto ref = lm_reference(family);
    const auto logp = torch::log_softmax(ref["logits"].to(at::kDouble), -1);
    const std::vector<int64_t> split = {3, 5};
    std::vector<std::vector<int64_t>> prompts, conts;
    for (int64_t b = 0; b < 2; ++b) {
      prompts.push_back(row(ref["input_ids"], b, 0, split[b]));
      conts.push_back(row(ref["input_ids"], b, split[b], 8));
    }
    ScoreOptions batched;
    batched.batch_size = 2;
    batched.greedy = true;
    const auto scores = score_continuations(model, prompts, conts, batched);
    ScoreOptions single;
    single.batch_size = 1;
    single.greedy = true;
    const auto alone = score_continuations(model, prompts, conts, single);
    for (int64_t b = 0; b < 2; ++b) {
      const auto& s = scores[b];
      ASSERT_EQ(s.token_logprobs.size(), conts[b].size());
      double sum = 0;
      for (size_t t = 0; t < conts[b].size(); ++t) {
        const int64_t pos = split[b] + static_cast<int64_t>(t);
        const double want = logp[b][pos - 1][conts[b][t]].item<double>();
        EXPECT_NEAR(s.token_logprobs[t], want, 1e-4) << family << " row " << b << " t " << t;
        EXPECT_NEAR(alone[b].token_logprobs[t], s.token_logprobs[t], 1e-5);
        sum += want;
      }
      EXPECT_NEAR(s.sum, sum, 1e-3);
      EXPECT_NEAR(s.mean, s.sum / static_cast<double>(conts[b].size()), 1e-12);
    }
    // A continuation of argmax tokens is greedy; the tensor API agrees with the scorer.
    std::vector<int64_t> argmax_cont;
    auto prompt = row(ref["input_ids"], 0, 0, 4);
    auto seq = prompt;
    {
      torch::NoGradGuard g;
      for (int i = 0; i < 3; ++i) {
        const auto next = model->forward(torch::tensor(seq).unsqueeze(0)).select(1, -1).argmax(-1);
        seq.push_back(next.item<int64_t>());
        argmax_cont.push_back(seq.back());
      }
    }
    const auto greedy = score_continuations(model, {prompt}, {argmax_cont}, single)[0];
    EXPECT_TRUE(greedy.greedy) << family;
    EXPECT_FALSE(score_continuations(model, {prompt}, {argmax_cont})[0].greedy);  // not asked for
    EXPECT_FALSE(scores[0].greedy && scores[1].greedy) << family;  // random tokens are not
    const auto ids = ref["input_ids"];
    auto target = torch::zeros_like(ids);
    target.narrow(1, 3, 5).fill_(1);
    torch::NoGradGuard g;
    const auto lp = token_logprobs(model, ids, ref["attention_mask"], target);
    EXPECT_NEAR(lp[0].sum().item<double>(), scores[0].sum, 1e-4) << family;
  }
}

// Requests with prompts of different lengths (so prompts are padded in every layout, and two
// share a length), 1 to 6 continuations of 0 to 6 tokens, ids drawn from [3, vocab).
std::vector<ScoreRequest> mixed_requests(int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto ids = [&](int64_t n) {
    std::vector<int64_t> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(3 + static_cast<int64_t>(rng() % static_cast<uint64_t>(vocab - 3)));
    return out;
  };
  const std::vector<int64_t> prompt_lengths = {3, 11, 1, 7, 7, 14, 5};
  std::vector<ScoreRequest> requests;
  for (size_t i = 0; i < prompt_lengths.size(); ++i) {
    ScoreRequest r;
    r.prompt = ids(prompt_lengths[i]);
    const size_t conts = 1 + (i * 5) % 6;
    for (size_t k = 0; k < conts; ++k) r.continuations.push_back(ids(static_cast<int64_t>((i + 2 * k) % 7)));
    requests.push_back(std::move(r));
  }
  return requests;
}

// Largest |a - b| over every token log-prob; also checks that sums, means and shapes agree.
double max_score_diff(const std::vector<std::vector<ContinuationScore>>& a,
                      const std::vector<std::vector<ContinuationScore>>& b) {
  double worst = 0.0;
  EXPECT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].size(), b[i].size());
    for (size_t k = 0; k < a[i].size() && k < b[i].size(); ++k) {
      EXPECT_EQ(a[i][k].token_logprobs.size(), b[i][k].token_logprobs.size());
      for (size_t t = 0; t < a[i][k].token_logprobs.size() && t < b[i][k].token_logprobs.size(); ++t) {
        worst = std::max(worst, std::abs(a[i][k].token_logprobs[t] - b[i][k].token_logprobs[t]));
      }
      worst = std::max(worst, std::abs(a[i][k].sum - b[i][k].sum) / 8.0);  // sums of <= 6 terms
      EXPECT_EQ(a[i][k].greedy, b[i][k].greedy);
    }
  }
  return worst;
}

// Every family, plus PanGu-π with SIAF's neighbour convolution (its cache carries a state) and
// Mistral's sliding window of 5 (counted in columns): the layouts that must keep rows free of
// inner padding are covered as well as the right-padded one.
// Dynamic NTK RoPE is left out: its frequencies depend on each pass's length (in transformers
// too), so a layout that runs the prompt and the continuation in separate passes gives another
// score by design, not by a bug.
std::vector<std::pair<std::string, CausalLM>> scoring_models(at::ScalarType dtype) {
  std::vector<std::pair<std::string, CausalLM>> models;
  for (const auto& family : kFamilies) {
    if (length_invariant(family)) models.emplace_back(family, load_pretrained(fixture("lm/" + family)));
  }
  torch::manual_seed(23);
  CausalLM pangu(tiny_pangu());
  perturb_pangu(pangu);
  pangu->eval();
  models.emplace_back("pangu_pi", pangu);
  for (auto& m : models) m.second->to(dtype);
  return models;
}

// The layouts compute the same thing in a different order. In fp64 (the composite ops, and a
// fp64 log-softmax) only that order differs, so anything but rounding shows: a wrong position,
// an attended padding key, a stale cache row. In fp32 the fused kernels run, and these fixtures'
// logits of order 5 (weights drawn from N(0, 0.25^2)) put the rounding of two summation orders
// at a few 1e-6 per token.
struct Precision {
  at::ScalarType dtype;
  double tolerance;
};
const std::vector<Precision> kPrecisions = {{at::kDouble, 1e-9}, {at::kFloat, 2e-5}};

TEST(Score, SharedPromptPathEqualsThePlainPath) {
  for (const auto& precision : kPrecisions) {
    for (auto& [family, model] : scoring_models(precision.dtype)) {
      const auto requests = mixed_requests(model->config.vocab_size, 5);
      ScoreOptions plain;
      plain.batch_size = 3;
      plain.greedy = true;
      const auto want = score_requests(model, requests, plain);
      // The plain path is the per-pair computation: one pair alone gives the same.
      ScoreOptions one;
      one.batch_size = 1;
      const auto alone = score_continuations(model, {requests[1].prompt}, {requests[1].continuations[0]}, one);
      EXPECT_LT(std::abs(alone[0].sum - want[1][0].sum), precision.tolerance) << family;
      for (int64_t batch : {1, 2, 4, 64}) {
        ScoreOptions shared;
        shared.share_prompt = true;
        shared.batch_size = batch;
        shared.greedy = true;
        const auto got = score_requests(model, requests, shared);
        EXPECT_LT(max_score_diff(got, want), precision.tolerance)
            << family << " " << c10::toString(precision.dtype) << " batch " << batch;
      }
      // Empty continuations score 0 (request 0 has nothing else to score).
      EXPECT_TRUE(want[0][0].token_logprobs.empty());
      EXPECT_EQ(want[0][0].sum, 0.0);
      EXPECT_TRUE(want[1][3].token_logprobs.empty());
      EXPECT_EQ(want[1][1].token_logprobs.size(), 3u);
    }
  }
}

TEST(Score, SharedPrefixPathEqualsThePlainPath) {
  for (const auto& precision : kPrecisions) {
    for (auto& [family, model] : scoring_models(precision.dtype)) {
      const auto requests = mixed_requests(model->config.vocab_size, 9);
      std::vector<int64_t> shots;
      for (int64_t i = 0; i < 12; ++i) shots.push_back(3 + (i * 37) % (model->config.vocab_size - 3));
      // The reference: every prompt with the prefix written in front, plain layout, no cache.
      std::vector<ScoreRequest> whole = requests;
      for (auto& r : whole) r.prompt.insert(r.prompt.begin(), shots.begin(), shots.end());
      ScoreOptions plain;
      plain.batch_size = 3;
      plain.greedy = true;
      const auto want = score_requests(model, whole, plain);
      for (int64_t room : {0, 64}) {
        const PrefixCache prefix = encode_prefix(model, shots, room);
        ASSERT_EQ(prefix.cache.length(), 12);
        for (const bool share : {false, true}) {
          for (int64_t batch : {2, 5}) {
            ScoreOptions o;
            o.share_prompt = share;
            o.batch_size = batch;
            o.greedy = true;
            const auto got = score_requests(model, requests, o, &prefix);
            EXPECT_LT(max_score_diff(got, want), precision.tolerance)
                << family << " " << c10::toString(precision.dtype) << (share ? " shared" : " plain")
                << " batch " << batch << " room " << room;
          }
        }
        // The prefix is only read.
        EXPECT_EQ(prefix.cache.length(), 12);
      }
    }
  }
}

TEST(Score, RejectsEmptyPromptsAndForeignPrefixes) {
  auto model = load_pretrained(fixture("lm/llama"));
  try {
    score_requests(model, {ScoreRequest{{}, {{5, 6}}}});
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("request 0 has an empty prompt"), std::string::npos) << e.what();
  }
  PrefixCache bad;
  bad.tokens = {4, 5, 6};
  bad.cache = model->make_cache();  // never run: holds 0 positions
  EXPECT_THROW(score_requests(model, {ScoreRequest{{7}, {{5}}}}, {}, &bad), concord::Error);
  EXPECT_THROW(encode_prefix(model, {}), concord::Error);
}

// The differentiable path gives the scorer's numbers, and its gradients are those of scoring
// each row alone without padding.
TEST(Score, ContinuationLogprobsCarryTheRowsGradients) {
  auto model = load_pretrained(fixture("lm/qwen2"));
  model->eval();
  const std::vector<std::vector<int64_t>> prompts = {{5, 9, 14, 3}, {7}, {20, 21, 22, 23, 24, 25, 26}};
  const std::vector<std::vector<int64_t>> conts = {{30, 31}, {40, 41, 42, 43, 44}, {}};
  const auto out = continuation_logprobs(model, prompts, conts, /*pad_token_id=*/0);
  ASSERT_EQ(out.logprobs.sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(out.mask.sum().item<double>(), 7.0);
  EXPECT_EQ(out.logprobs[2].abs().sum().item<double>(), 0.0);  // the empty continuation
  const auto scores = score_continuations(model, prompts, conts);
  for (size_t r = 0; r < prompts.size(); ++r) {
    for (size_t t = 0; t < conts[r].size(); ++t) {
      EXPECT_NEAR(out.logprobs[static_cast<int64_t>(r)][static_cast<int64_t>(t)].item<double>(),
                  scores[r].token_logprobs[t], 1e-6);
    }
  }
  ASSERT_TRUE(out.logprobs.requires_grad());
  model->zero_grad();
  out.logprobs.sum().backward();
  std::vector<at::Tensor> batched;
  for (const auto& p : model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    batched.push_back(p.grad().clone());
  }
  // Reference: each row alone, full forward, log-softmax over all positions, its tokens summed.
  model->zero_grad();
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (conts[r].empty()) continue;
    std::vector<int64_t> all = prompts[r];
    all.insert(all.end(), conts[r].begin(), conts[r].end());
    const auto logp = torch::log_softmax(model->forward(torch::tensor(all).unsqueeze(0))[0], -1);
    at::Tensor sum = torch::zeros({});
    for (size_t t = 0; t < conts[r].size(); ++t) {
      sum = sum + logp[static_cast<int64_t>(prompts[r].size() + t - 1)][conts[r][t]];
    }
    sum.backward();
  }
  size_t i = 0;
  double worst = 0.0;
  for (const auto& p : model->parameters()) {
    worst = std::max(worst, max_abs_diff(p.grad(), batched[i++]));
  }
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(batched[0].abs().sum().item<double>(), 0.0);  // gradients reached the embedding
  model->zero_grad();
}

// ---- PanGu-π ------------------------------------------------------------------------------

TEST(PanGuPi, FreshModelIsTheLlamaModelWithTheSameWeights) {
  torch::manual_seed(21);
  const ModelConfig pc = tiny_pangu();
  ModelConfig lc = pc;
  lc.family = ModelFamily::Llama;
  lc.siaf_terms = 0;
  lc.siaf_neighbour_kernel = 0;
  lc.shortcut_paths = 0;
  CausalLM pangu(pc), llama(lc);
  auto weights = to_hf_state_dict(pangu);
  for (auto it = weights.begin(); it != weights.end();) {
    const bool extra = it->first.find("siaf") != std::string::npos ||
                       it->first.find("augmented_shortcut") != std::string::npos;
    it = extra ? weights.erase(it) : std::next(it);
  }
  load_hf_state_dict(llama, weights, "<pangu weights>");
  const auto ids = torch::randint(3, 97, {2, 9});
  torch::NoGradGuard g;
  EXPECT_LT(max_abs_diff(pangu->forward(ids), llama->forward(ids)), 1e-6);
  perturb_pangu(pangu);
  EXPECT_GT(max_abs_diff(pangu->forward(ids), llama->forward(ids)), 1e-3);
}

TEST(PanGuPi, CacheBatchingAndRoundTrip) {
  torch::manual_seed(22);
  CausalLM model(tiny_pangu());
  perturb_pangu(model);
  model->eval();
  const auto ids = torch::randint(3, 97, {2, 9});
  torch::NoGradGuard g;
  const auto full = model->forward(ids);
  // KV cache (and the SIAF neighbour state) token by token.
  auto cache = model->make_cache();
  std::vector<at::Tensor> parts{model->forward(ids.narrow(1, 0, 4), {}, &cache)};
  for (int64_t t = 4; t < 9; ++t) parts.push_back(model->forward(ids.narrow(1, t, 1), {}, &cache));
  EXPECT_LT(max_abs_diff(torch::cat(parts, 1), full), 1e-5);
  // A left-padded row equals the same row alone.
  auto padded = torch::zeros({1, 12}, torch::kLong);
  padded.narrow(1, 3, 9).copy_(ids[1]);
  auto mask = torch::zeros({1, 12}, torch::kLong);
  mask.narrow(1, 3, 9).fill_(1);
  EXPECT_LT(max_abs_diff(model->forward(padded, mask).narrow(1, 3, 9), full.narrow(0, 1, 1)), 1e-5);
  // Generation: batched == alone.
  GenerationOptions o;
  o.max_new_tokens = 6;
  const std::vector<std::vector<int64_t>> prompts = {row(ids, 0, 0, 2), row(ids, 1)};
  const auto batched = generate(model, prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batched[i].tokens, generate(model, {prompts[i]}, o)[0].tokens);
  }
  // Save and load.
  TempDir tmp;
  save_pretrained(model, tmp.path());
  const auto config = concord::load_json_file(tmp / "config.json");
  EXPECT_EQ(config["model_type"], "pangu_pi");
  const auto tensors = concord::io::load_safetensors(tmp / "model.safetensors");
  EXPECT_TRUE(tensors.count("model.layers.1.mlp.siaf.neighbour"));
  EXPECT_TRUE(tensors.count("model.layers.0.augmented_shortcut.fc2_weight"));
  auto again = load_pretrained(tmp.path());
  EXPECT_TRUE(torch::equal(again->forward(ids), full));
}

// ---- rows that repeat a prefix (lm/repeated_prefix.h) ---------------------------------------

TEST(RepeatedPrefix, GroupsRowsByTheirIdsAndMask) {
  // Rows 0 and 1 share columns 0..2; rows 2 and 3 too (their pad ids differ, under mask 0);
  // row 2's mask tells it from row 0's, row 4's third id from row 0's.
  const at::Tensor ids =
      torch::tensor({5, 6, 7, 1, 5, 6, 7, 2, 0, 6, 7, 3, 9, 6, 7, 4, 5, 6, 8, 1}, torch::kLong)
          .view({5, 4});
  const at::Tensor mask =
      torch::tensor({1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1}, torch::kLong)
          .view({5, 4});
  const RepeatedPrefixes p = find_repeated_prefixes(ids, mask, 3);
  ASSERT_EQ(p.distinct(), 3);
  ASSERT_EQ(p.rows(), 5);
  const auto inv = p.inverse.accessor<int64_t, 1>();
  EXPECT_EQ(inv[0], inv[1]);
  EXPECT_EQ(inv[2], inv[3]);
  EXPECT_EQ(std::set<int64_t>({inv[0], inv[2], inv[4]}).size(), 3u);
  for (int64_t n = 0; n < 5; ++n) {  // each row's representative begins as the row does
    const int64_t r = p.representative[inv[n]].item<int64_t>();
    EXPECT_TRUE(torch::equal(mask[r].narrow(0, 0, 3), mask[n].narrow(0, 0, 3))) << n;
    EXPECT_TRUE(
        torch::equal((ids[r] * mask[r]).narrow(0, 0, 3), (ids[n] * mask[n]).narrow(0, 0, 3)))
        << n;
  }
  // 3 x 3 + 5 x 1 slots against 5 x 4: saves 30%.
  EXPECT_EQ(p.computed_tokens(4), 14);
  EXPECT_TRUE(p.pays(4, 0.3));
  EXPECT_FALSE(p.pays(4, 0.31));
  // Rows that share no prefix, and the empty prefix (which is never run), save nothing.
  EXPECT_FALSE(find_repeated_prefixes(ids.narrow(0, 3, 2), {}, 3).pays(4, 0.0));
  EXPECT_FALSE(find_repeated_prefixes(ids, mask, 0).pays(4, 0.0));
  EXPECT_THROW(find_repeated_prefixes(ids, mask, 5), concord::Error);
}

namespace {

// N rows: prompts (left-padded to P) picked by `which`, each followed by a random response of
// 1..R tokens (right-padded), ids in [3, vocab).
struct RepeatedRows {
  at::Tensor ids, mask;
  int64_t prompt_columns = 0;
};
RepeatedRows repeated_rows(const std::vector<std::vector<int64_t>>& prompts,
                           const std::vector<int>& which, int64_t max_response, int64_t vocab,
                           uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto draw = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max<int64_t>(P, static_cast<int64_t>(p.size()));
  const auto N = static_cast<int64_t>(which.size());
  RepeatedRows out;
  out.prompt_columns = P;
  out.ids = torch::zeros({N, P + max_response}, torch::kLong);
  out.mask = torch::zeros_like(out.ids);
  for (int64_t n = 0; n < N; ++n) {
    const auto& p = prompts[static_cast<size_t>(which[static_cast<size_t>(n)])];
    const int64_t offset = P - static_cast<int64_t>(p.size());
    for (size_t j = 0; j < p.size(); ++j) {
      out.ids[n][offset + static_cast<int64_t>(j)] = p[j];
      out.mask[n][offset + static_cast<int64_t>(j)] = 1;
    }
    for (int64_t j = 0, len = draw(1, max_response); j < len; ++j) {
      out.ids[n][P + j] = draw(3, vocab - 1);
      out.mask[n][P + j] = 1;
    }
  }
  return out;
}

}  // namespace

// The two passes against the full rows in every family (RoPE, sliding windows, post-norm,
// PanGu-pi's SIAF state and shortcuts), left-padded prompts of 1 to 6 tokens, forward and the
// parameters' gradients.
TEST(RepeatedPrefix, HiddenStatesAndGradientsEqualTheFullRows) {
  std::vector<std::pair<std::string, CausalLM>> models;
  for (const auto& family : kFamilies) {
    if (length_invariant(family))
      models.emplace_back(family, load_pretrained(fixture("lm/" + family)));
  }
  torch::manual_seed(3);
  CausalLM pangu(tiny_pangu());
  perturb_pangu(pangu);
  models.emplace_back("pangu_pi", pangu);
  const std::vector<std::vector<int64_t>> prompts = {{11, 12, 13, 14, 15, 16}, {21}, {31, 32, 33}};
  for (auto& [family, model] : models) {
    model->eval();
    const RepeatedRows rows =
        repeated_rows(prompts, {0, 1, 0, 2, 1, 0, 2}, 4, model->config.vocab_size, 7);
    const int64_t c = rows.prompt_columns - 1, T = rows.ids.size(1);
    const RepeatedPrefixes found = find_repeated_prefixes(rows.ids, rows.mask, c);
    ASSERT_EQ(found.distinct(), 3) << family;
    ASSERT_TRUE(found.pays(T)) << family;

    const at::Tensor keep = rows.mask.narrow(1, c, T - c).to(torch::kFloat).unsqueeze(-1);
    auto weighted_sum = [&](const at::Tensor& h) {
      torch::manual_seed(5);
      return (h * keep * torch::randn(h.sizes())).sum();
    };
    auto gradients = [&](const at::Tensor& loss) {
      model->zero_grad();
      loss.backward();
      std::vector<at::Tensor> g;
      for (const auto& p : model->parameters()) {
        g.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
      }
      return g;
    };
    const at::Tensor full = model->hidden_states(rows.ids, rows.mask).narrow(1, c, T - c);
    const auto full_grads = gradients(weighted_sum(full));
    const at::Tensor shared = hidden_states_after_prefix(model, rows.ids, rows.mask, c);
    EXPECT_LT(max_abs_diff(shared * keep, full * keep), 2e-5) << family;
    const auto shared_grads = gradients(weighted_sum(shared));
    double worst = 0;
    for (size_t i = 0; i < full_grads.size(); ++i) {
      worst = std::max(worst, max_abs_diff(shared_grads[i], full_grads[i]) /
                                  (full_grads[i].abs().max().item<double>() + 1e-12));
    }
    EXPECT_LT(worst, 1e-4) << family;

    // And it took the two passes: the same values as encoding the prefixes by hand.
    torch::NoGradGuard g;
    auto cache = model->make_cache();
    cache.reserve(T);
    encode_repeated_prefixes(model, rows.ids, rows.mask, found, cache);
    EXPECT_EQ(cache.length(), c);
    const at::Tensor by_hand =
        model->hidden_states(rows.ids.narrow(1, c, T - c), rows.mask, &cache);
    EXPECT_TRUE(torch::equal(hidden_states_after_prefix(model, rows.ids, rows.mask, c), by_hand))
        << family;
    // Below the threshold (3 of 7 rows distinct, 5 of 10 columns shared: 29% saved) the rows
    // run as they are.
    EXPECT_TRUE(torch::equal(hidden_states_after_prefix(model, rows.ids, rows.mask, c, 0.5),
                             model->hidden_states(rows.ids, rows.mask).narrow(1, c, T - c)))
        << family;
  }
}

// GRPO samples G responses per prompt: generation runs each distinct prompt once and copies its
// cache; the tokens (greedy) and their log-probs equal those of the rows run one by one.
TEST(Generate, RepeatedPromptsRunOnceWithTheSameResult) {
  torch::manual_seed(4);
  CausalLM pangu(tiny_pangu());
  perturb_pangu(pangu);
  for (auto model : {load_pretrained(fixture("lm/llama")), pangu}) {
    model->eval();
    const std::vector<std::vector<int64_t>> prompts = {
        {11, 12, 13, 14, 15}, {21, 22}, {11, 12, 13, 14, 15}, {21, 22}, {11, 12, 13, 14, 15}, {31}};
    const auto [ids, mask] = [&] {
      at::Tensor i = torch::zeros({6, 5}, torch::kLong), m = torch::zeros({6, 5}, torch::kLong);
      for (int64_t n = 0; n < 6; ++n) {
        const auto& p = prompts[static_cast<size_t>(n)];
        for (size_t j = 0; j < p.size(); ++j) {
          i[n][5 - static_cast<int64_t>(p.size()) + static_cast<int64_t>(j)] = p[j];
          m[n][5 - static_cast<int64_t>(p.size()) + static_cast<int64_t>(j)] = 1;
        }
      }
      return std::make_pair(i, m);
    }();
    ASSERT_TRUE(find_repeated_prefixes(ids, mask, 5).pays(5));
    GenerationOptions o;
    o.max_new_tokens = 6;
    o.stop_token_ids = {-1};
    const SampledBatch shared = generate_tensors(model, ids, mask, o);
    o.share_prompts = false;
    const SampledBatch plain = generate_tensors(model, ids, mask, o);
    EXPECT_TRUE(torch::equal(shared.sequences, plain.sequences));
    EXPECT_LT(max_abs_diff(shared.logprobs, plain.logprobs), 1e-5);
  }
}
