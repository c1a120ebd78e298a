// Tests of the PanGu-π feature-diversity measure (concord/lm/diversity.h): d_M of planted
// matrices against its closed form, padding excluded, and per-layer values of real models,
// including a model whose blocks are exact identity maps (every layer then has the same value).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/diversity.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "test_support.h"

using namespace concord::lm;
using concord::testing::fixture;

namespace {

CausalLM unseeded_tiny_model(const std::string& name) {
  return CausalLM(load_any_model_config(::concord::testing::source_dir().string() + "/configs/models/" + name));
}

// Ragged token sequences of the given lengths, ids drawn below `vocab`.
std::vector<std::vector<int64_t>> sequences(const std::vector<int64_t>& lengths, int64_t vocab,
                                            uint64_t seed = 7) {
  std::vector<std::vector<int64_t>> out;
  uint64_t state = seed;
  for (int64_t n : lengths) {
    std::vector<int64_t> s;
    for (int64_t t = 0; t < n; ++t) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      s.push_back(static_cast<int64_t>((state >> 33) % static_cast<uint64_t>(vocab)));
    }
    out.push_back(s);
  }
  return out;
}

}  // namespace

TEST(Diversity, RankOneFeaturesAreCollapsed) {
  // Every token the same vector: H = 1 x^T is in M, distance 0.
  const at::Tensor x = torch::randn({16}, torch::kFloat);
  const at::Tensor h = x.unsqueeze(0).expand({9, 16}).contiguous();
  EXPECT_NEAR(feature_distance(h).item<double>(), 0.0, 1e-6);
  // A large common offset changes nothing: the distance only sees the spread around the mean.
  const at::Tensor spread = torch::randn({9, 16}, torch::kDouble);
  const double base = feature_distance(spread).item<double>();
  EXPECT_NEAR(feature_distance(spread + 1e3 * x.to(at::kDouble)).item<double>(), base, 1e-8 * base);
}

TEST(Diversity, PlantedMatrixGivesTheClosedForm) {
  // H = 1 x^T + u v^T with u summing to 0: the mean row is x, so d_M(H) = ||u|| ||v||.
  const at::Tensor u = torch::tensor({1.0, -1.0, 2.0, -2.0, 3.0, -3.0}, torch::kDouble);
  const at::Tensor v = torch::tensor({3.0, 4.0, 0.0, 12.0}, torch::kDouble);  // ||v|| = 13
  const at::Tensor x = torch::tensor({0.5, -2.0, 7.0, 1.0}, torch::kDouble);
  const at::Tensor h = x.unsqueeze(0) + u.unsqueeze(1) * v.unsqueeze(0);
  const double expected = std::sqrt(28.0) * 13.0;
  EXPECT_NEAR(feature_distance(h).item<double>(), expected, 1e-10);
  // ||H||_F^2 = d_M^2 + N ||x||^2 (the centred part is orthogonal to 1 x^T).
  const double norm = std::sqrt(expected * expected + 6.0 * x.pow(2).sum().item<double>());
  EXPECT_NEAR(feature_norm(h).item<double>(), norm, 1e-10);
  // It is a minimum over x: any other row vector is farther away.
  const at::Tensor other = x + 0.1;
  EXPECT_GT((h - other.unsqueeze(0)).norm().item<double>(), expected);
  // Batched with float32 input, the same value per row.
  const at::Tensor batch = torch::stack({h, 2.0 * h}).to(at::kFloat);
  const at::Tensor d = feature_distance(batch);
  ASSERT_EQ(d.sizes(), (at::IntArrayRef{2}));
  EXPECT_NEAR(d[0].item<double>(), expected, 1e-4);
  EXPECT_NEAR(d[1].item<double>(), 2.0 * expected, 1e-4);
}

TEST(Diversity, PaddingDoesNotCount) {
  const at::Tensor u = torch::tensor({1.0, -1.0, 2.0, -2.0}, torch::kDouble);
  const at::Tensor v = torch::tensor({3.0, 4.0}, torch::kDouble);
  const at::Tensor real = torch::tensor({1.0, 2.0}, torch::kDouble).unsqueeze(0) +
                          u.unsqueeze(1) * v.unsqueeze(0);  // d_M = sqrt(10) * 5
  // Row 0: 4 real tokens then 3 padding rows of garbage (huge, inf, nan); row 1: all real.
  at::Tensor h = torch::zeros({2, 7, 2}, torch::kDouble);
  h[0].narrow(0, 0, 4).copy_(real);
  h[0][4].fill_(1e30);
  h[0][5].fill_(std::numeric_limits<double>::infinity());
  h[0][6].fill_(std::nan(""));
  h[1].copy_(torch::randn({7, 2}, torch::kDouble));
  at::Tensor mask = torch::ones({2, 7}, torch::kLong);
  mask[0].narrow(0, 4, 3).zero_();
  const at::Tensor d = feature_distance(h, mask);
  EXPECT_NEAR(d[0].item<double>(), std::sqrt(10.0) * 5.0, 1e-10);
  EXPECT_NEAR(d[1].item<double>(), feature_distance(h[1]).item<double>(), 1e-10);
  EXPECT_NEAR(feature_norm(h, mask)[0].item<double>(), real.norm().item<double>(), 1e-10);
  // A row with no real token is collapsed, not NaN.
  mask[1].zero_();
  EXPECT_EQ(feature_distance(h, mask)[1].item<double>(), 0.0);
  EXPECT_THROW(feature_distance(h, torch::ones({2, 6})), concord::Error);
}

TEST(Diversity, LayerValuesOfTheFixtureModelsAreFiniteAndStartAtTheEmbedding) {
  const auto seqs = sequences({8, 5, 8, 3, 1}, 160);
  for (const char* family : {"gpt2", "llama", "mistral", "qwen2"}) {
    SCOPED_TRACE(family);
    CausalLM model = load_pretrained(fixture(std::string("lm/") + family));
    DiversityOptions o;
    o.batch_size = 2;
    const LayerDiversity r = layer_diversity(model, seqs, o);
    ASSERT_EQ(r.num_layers(), static_cast<size_t>(model->config.num_layers) + 1);
    EXPECT_EQ(r.sequences, 4);
    EXPECT_EQ(r.skipped, 1);  // the one-token sequence
    EXPECT_EQ(r.tokens, 8 + 5 + 8 + 3);
    for (size_t l = 0; l < r.num_layers(); ++l) {
      EXPECT_TRUE(std::isfinite(r.distance[l]) && r.distance[l] > 0) << l;
      EXPECT_TRUE(r.relative[l] > 0 && r.relative[l] <= 1.0 + 1e-12) << l;
      EXPECT_TRUE(std::isfinite(r.per_token[l])) << l;
    }
    // Layer 0 is the input embedding, measured directly here.
    double expected = 0.0;
    {
      torch::NoGradGuard g;
      for (size_t i = 0; i < 4; ++i) {
        const at::Tensor ids = torch::tensor(seqs[i], torch::kLong);
        at::Tensor e = model->embed->forward(ids);
        if (model->positions) e = e + model->positions->forward(torch::arange(ids.size(0)));
        expected += feature_distance(e).item<double>();
      }
    }
    EXPECT_NEAR(r.distance[0], expected / 4.0, 1e-5 * expected);
    EXPECT_EQ(LayerDiversity::layer_name(0), "embedding");
    EXPECT_EQ(r.to_json()["layers"].size(), r.num_layers());
  }
}

TEST(Diversity, BatchingWithPaddingEqualsOneSequenceAtATime) {
  CausalLM model = unseeded_tiny_model("tiny-pangu-pi.json");
  const auto seqs = sequences({12, 4, 9, 7, 2}, 257, 11);
  DiversityOptions batched;
  batched.batch_size = 5;
  DiversityOptions alone;
  alone.batch_size = 1;
  const LayerDiversity a = layer_diversity(model, seqs, batched);
  const LayerDiversity b = layer_diversity(model, seqs, alone);
  ASSERT_EQ(a.num_layers(), b.num_layers());
  for (size_t l = 0; l < a.num_layers(); ++l) {
    EXPECT_NEAR(a.distance[l], b.distance[l], 1e-5 * b.distance[l]) << l;
    EXPECT_NEAR(a.relative[l], b.relative[l], 1e-5) << l;
    EXPECT_NEAR(a.per_token[l], b.per_token[l], 1e-5 * b.per_token[l]) << l;
  }
  // Truncation: with max_length 4 every sequence is cut to (at most) 4 tokens.
  DiversityOptions cut;
  cut.max_length = 4;
  const LayerDiversity c = layer_diversity(model, seqs, cut);
  EXPECT_EQ(c.truncated, 3);
  EXPECT_EQ(c.tokens, 4 + 4 + 4 + 4 + 2);
}

TEST(Diversity, IdentityBlocksGiveEqualValuesAtEveryLayer) {
  for (const char* name : {"tiny-gpt2.json", "tiny-llama.json", "tiny-pangu-pi.json"}) {
    SCOPED_TRACE(name);
    CausalLM model = unseeded_tiny_model(name);
    {
      // Zero out-projections: attention and FFN add exactly 0 (PanGu-π's shortcut output layer
      // starts at 0 too), so each block passes its input through unchanged.
      torch::NoGradGuard g;
      for (size_t i = 0; i < model->layers->size(); ++i) {
        auto block = model->layers->ptr<TransformerBlockImpl>(i);
        block->attn->out->weight.zero_();
        if (block->attn->out->bias.defined()) block->attn->out->bias.zero_();
        block->mlp->fc_out->weight.zero_();
        if (block->mlp->fc_out->bias.defined()) block->mlp->fc_out->bias.zero_();
      }
    }
    const LayerDiversity r = layer_diversity(model, sequences({10, 6, 3}, 257, 3));
    ASSERT_EQ(r.num_layers(), 3u);
    for (size_t l = 1; l < r.num_layers(); ++l) {
      EXPECT_DOUBLE_EQ(r.distance[l], r.distance[0]) << l;
      EXPECT_DOUBLE_EQ(r.relative[l], r.relative[0]) << l;
    }
    // A fresh model's blocks are not identity maps: the values move.
    const LayerDiversity fresh =
        layer_diversity(unseeded_tiny_model(name), sequences({10, 6, 3}, 257, 3));
    EXPECT_NE(fresh.distance[2], fresh.distance[0]);
  }
}

TEST(Diversity, BadOptionsAreErrors) {
  CausalLM model = unseeded_tiny_model("tiny-llama.json");
  DiversityOptions o;
  o.batch_size = 0;
  EXPECT_THROW(layer_diversity(model, sequences({4}, 257), o), concord::Error);
  o = {};
  o.pad_token_id = 257;
  EXPECT_THROW(layer_diversity(model, sequences({4}, 257), o), concord::Error);
  // Nothing long enough: no sequences, no error.
  EXPECT_EQ(layer_diversity(model, sequences({1, 1}, 257)).sequences, 0);
}
