// Tests of RoPE's scaled frequencies (concord/nn/attention.h) against the equations written out
// in double precision here, at the sizes of the checkpoints that use them (Llama-3.1-8B's
// llama3 scaling, Qwen2.5's YaRN, dynamic NTK past the context); the transformers parity of
// the same code is in tests/lm (the rope-* fixtures). And nn::Linear / nn::Embedding: the
// parameters and random draws of torch::nn::Linear / torch::nn::Embedding, none under a
// SkipInitGuard.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "concord/nn/attention.h"
#include "concord/nn/embedding.h"
#include "concord/nn/init.h"
#include "concord/nn/linear.h"

namespace cn = concord::nn;

namespace {

std::vector<double> defaults(int64_t dim, double theta) {
  std::vector<double> f;
  for (int64_t i = 0; i < dim / 2; ++i) f.push_back(std::pow(theta, -2.0 * i / dim));
  return f;
}

void expect_close(const at::Tensor& got, const std::vector<double>& want, const char* what) {
  ASSERT_EQ(got.numel(), static_cast<int64_t>(want.size())) << what;
  const at::Tensor g = got.to(at::kDouble).contiguous();
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(g[static_cast<int64_t>(i)].item<double>(), want[i], 2e-6 * want[i]) << what << " " << i;
  }
}

}  // namespace

TEST(Rope, DefaultAndLinearFrequencies) {
  cn::RopeScaling none;
  auto [f, m] = cn::rope_inverse_frequencies(128, 500000.0, none, 0, torch::kCPU);
  expect_close(f, defaults(128, 500000.0), "default");
  EXPECT_EQ(m, 1.0);
  cn::RopeScaling linear;
  linear.type = cn::RopeType::Linear;
  linear.factor = 4.0;
  std::vector<double> want = defaults(128, 10000.0);
  for (double& x : want) x /= 4.0;
  expect_close(cn::rope_inverse_frequencies(128, 10000.0, linear, 0, torch::kCPU).first, want,
               "linear");
}

// Llama-3.1-8B: theta 500000, factor 8, low/high frequency factors 1 and 4, L = 8192.
TEST(Rope, Llama3KeepsHighFrequenciesScalesLowOnesAndBlendsBetween) {
  cn::RopeScaling s;
  s.type = cn::RopeType::Llama3;
  s.factor = 8.0;
  s.low_freq_factor = 1.0;
  s.high_freq_factor = 4.0;
  s.original_max_position_embeddings = 8192;
  const auto f = defaults(128, 500000.0);
  std::vector<double> want;
  int kept = 0, scaled = 0, blended = 0;
  for (double x : f) {
    const double wavelen = 2 * M_PI / x;
    if (wavelen < 8192.0 / 4.0) {
      want.push_back(x);
      ++kept;
    } else if (wavelen > 8192.0 / 1.0) {
      want.push_back(x / 8.0);
      ++scaled;
    } else {
      const double g = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
      want.push_back((1 - g) * x / 8.0 + g * x);
      ++blended;
    }
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(scaled, 0);
  EXPECT_GT(blended, 0);
  const auto [got, m] = cn::rope_inverse_frequencies(128, 500000.0, s, 0, torch::kCPU);
  expect_close(got, want, "llama3");
  EXPECT_EQ(m, 1.0);
}

// Dynamic NTK: the default frequencies up to the context, then a larger base for longer passes.
TEST(Rope, DynamicNtkRaisesTheBaseOnlyPastTheContext) {
  cn::RopeScaling s;
  s.type = cn::RopeType::Dynamic;
  s.factor = 2.0;
  s.max_position_embeddings = 4096;
  expect_close(cn::rope_inverse_frequencies(128, 10000.0, s, 4095, torch::kCPU).first,
               defaults(128, 10000.0), "inside the context");
  const double n = 10000;  // max position 9999
  const double base = 10000.0 * std::pow(2.0 * n / 4096 - 1.0, 128.0 / 126.0);
  expect_close(cn::rope_inverse_frequencies(128, 10000.0, s, 9999, torch::kCPU).first,
               defaults(128, base), "past the context");
  // rope_tables reads the longest position of the pass.
  const auto pos = torch::tensor({{9997, 9998, 9999}}, torch::kLong);
  const auto [cos, sin] = cn::rope_tables(pos, 128, 10000.0, s, torch::kDouble);
  const double angle = 9999 * std::pow(base, -2.0 * 5 / 128);
  EXPECT_NEAR(cos[0][2][5].item<double>(), std::cos(angle), 1e-3);
}

// YaRN as Qwen2.5 configures it (theta 1e6, factor 4, L = 32768): the ramp between the
// dimensions where wavelengths turn beta_fast = 32 and beta_slow = 1 times over L, and the
// attention factor 0.1 ln 4 + 1 on cos and sin.
TEST(Rope, YarnRampsBetweenInterpolationAndExtrapolation) {
  cn::RopeScaling s;
  s.type = cn::RopeType::Yarn;
  s.factor = 4.0;
  s.original_max_position_embeddings = 32768;
  const int64_t dim = 128;
  const double theta = 1e6;
  auto correction = [&](double rotations) {
    return dim * std::log(32768.0 / (rotations * 2 * M_PI)) / (2 * std::log(theta));
  };
  const double lo = std::max(std::floor(correction(32.0)), 0.0);
  const double hi = std::min(std::ceil(correction(1.0)), static_cast<double>(dim - 1));
  ASSERT_LT(lo, hi);
  std::vector<double> want;
  const auto f = defaults(dim, theta);
  for (int64_t i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((i - lo) / (hi - lo), 0.0, 1.0);
    const double extrapolation = 1 - ramp;
    want.push_back(f[i] / 4.0 * (1 - extrapolation) + f[i] * extrapolation);
  }
  const auto [got, m] = cn::rope_inverse_frequencies(dim, theta, s, 0, torch::kCPU);
  expect_close(got, want, "yarn");
  EXPECT_DOUBLE_EQ(m, 0.1 * std::log(4.0) + 1.0);
  // DeepSeek-style mscale / mscale_all_dim, and an explicit attention_factor.
  s.mscale = 0.707;
  s.mscale_all_dim = 0.707;
  EXPECT_DOUBLE_EQ(cn::rope_inverse_frequencies(dim, theta, s, 0, torch::kCPU).second, 1.0);
  s.attention_factor = 1.25;
  EXPECT_DOUBLE_EQ(cn::rope_inverse_frequencies(dim, theta, s, 0, torch::kCPU).second, 1.25);
  // cos^2 + sin^2 = m^2: the tables carry the factor.
  const auto [cos, sin] = cn::rope_tables(torch::tensor({{0, 7, 300}}, torch::kLong), dim, theta,
                                          s, torch::kFloat);
  EXPECT_LT((cos * cos + sin * sin - 1.25 * 1.25).abs().max().item<double>(), 1e-5);
}

TEST(Rope, TypeNamesRoundTrip) {
  for (auto t : {cn::RopeType::Default, cn::RopeType::Linear, cn::RopeType::Dynamic,
                 cn::RopeType::Yarn, cn::RopeType::Llama3}) {
    EXPECT_EQ(cn::parse_rope_type(cn::rope_type_name(t)), t);
  }
  EXPECT_FALSE(cn::parse_rope_type("longrope").has_value());
}

TEST(Linear, SameParametersAndDrawsAsTorchLinear) {
  torch::manual_seed(3);
  cn::Linear ours(cn::LinearOptions(5, 7));
  torch::manual_seed(3);
  torch::nn::Linear theirs(torch::nn::LinearOptions(5, 7));
  EXPECT_TRUE(torch::equal(ours->weight, theirs->weight));
  EXPECT_TRUE(torch::equal(ours->bias, theirs->bias));
  EXPECT_EQ(ours->named_parameters().keys(), theirs->named_parameters().keys());
  const auto x = torch::randn({3, 5});
  EXPECT_TRUE(torch::allclose(ours->forward(x), theirs->forward(x)));
  cn::Linear no_bias(cn::LinearOptions(5, 7).bias(false));
  EXPECT_FALSE(no_bias->bias.defined());
  EXPECT_EQ(no_bias->parameters().size(), 1u);

  torch::manual_seed(4);
  cn::Embedding table(9, 4);
  torch::manual_seed(4);
  torch::nn::Embedding reference(9, 4);
  EXPECT_TRUE(torch::equal(table->weight, reference->weight));
  const auto ids = torch::tensor({{0, 8, 3}}, torch::kLong);
  EXPECT_TRUE(torch::equal(table->forward(ids), reference->forward(ids)));
}

TEST(Linear, SkipInitGuardDrawsNothing) {
  torch::manual_seed(5);
  const auto plain = torch::rand({3});
  torch::manual_seed(5);
  {
    cn::SkipInitGuard skip;
    EXPECT_TRUE(cn::skip_init_enabled());
    cn::Linear l(cn::LinearOptions(64, 32));
    cn::Embedding e(100, 8);
    EXPECT_EQ(l->weight.sizes(), (std::vector<int64_t>{32, 64}));
    EXPECT_EQ(e->weight.sizes(), (std::vector<int64_t>{100, 8}));
    {
      cn::SkipInitGuard nested;
    }
    EXPECT_TRUE(cn::skip_init_enabled());  // the inner guard restores, not clears
  }
  EXPECT_FALSE(cn::skip_init_enabled());
  EXPECT_TRUE(torch::equal(torch::rand({3}), plain));
}
