// Tests of the nn modules: RMSNorm, SeriesInformedActivation (PanGu-π Eq. 7), AugmentedShortcut
// (Eq. 4), RoPE, grouped-query attention, the attention mask, the KV cache and FeedForward.
// Each compares with an independent computation written out here.
#include <gtest/gtest.h>

#include <cmath>

#include <torch/torch.h>

#include "concord/nn/attention.h"
#include "concord/nn/augmented_shortcut.h"
#include "concord/nn/feed_forward.h"
#include "concord/nn/kv_cache.h"
#include "concord/nn/norm.h"
#include "concord/nn/siaf.h"
#include "concord/ops/siaf.h"
#include "test_support.h"

using concord::testing::max_abs_diff;

namespace cn = concord::nn;
using concord::ops::Activation;

namespace {

}  // namespace

TEST(RMSNorm, MatchesTheFormulaByHand) {
  cn::RMSNorm norm(cn::RMSNormOptions(4).eps(1e-6));
  {
    torch::NoGradGuard g;
    norm->weight.copy_(torch::tensor({1.0f, 2.0f, 0.5f, -1.0f}));
  }
  const auto y = norm->forward(torch::tensor({{1.0f, 2.0f, 3.0f, 4.0f}}));
  // mean(x^2) = 30 / 4 = 7.5
  const double r = 1.0 / std::sqrt(7.5 + 1e-6);
  const auto want = torch::tensor({{1.0 * r, 4.0 * r, 1.5 * r, -4.0 * r}});
  EXPECT_LT(max_abs_diff(y, want), 1e-6);
}

TEST(SeriesInformedActivation, StartsAsTheBaseActivation) {
  torch::manual_seed(1);
  const auto x = torch::randn({3, 5, 16}) * 3;
  for (Activation act : {Activation::SiLU, Activation::GELU, Activation::ReLU}) {
    cn::SeriesInformedActivation siaf(cn::SeriesInformedActivationOptions(16).terms(3).activation(act));
    const auto base = act == Activation::SiLU ? torch::silu(x)
                      : act == Activation::GELU ? torch::gelu(x)
                                                : torch::relu(x);
    EXPECT_LT(max_abs_diff(siaf->forward(x), base), 1e-6) << concord::ops::activation_name(act);
    // The extra shifts are distinct (+0.5, -1.0): the terms are different functions of x.
    EXPECT_FLOAT_EQ(siaf->b[1][0].item<float>(), 0.5f);
    EXPECT_FLOAT_EQ(siaf->b[2][0].item<float>(), -1.0f);
    EXPECT_FLOAT_EQ(siaf->a[1][0].item<float>(), 0.0f);
  }
}

TEST(SeriesInformedActivation, IsEquation7AndLearnsFromTheFirstStep) {
  torch::manual_seed(2);
  cn::SeriesInformedActivation siaf(cn::SeriesInformedActivationOptions(8).terms(2));
  const auto x = torch::randn({4, 8});
  // Gradients at initialisation: a_2 gets sum(dy * silu(x + b_2)) != 0; b_2 gets 0 (a_2 = 0).
  siaf->forward(x).sum().backward();
  const auto want_da2 = torch::silu(x + 0.5).sum(0);
  EXPECT_LT(max_abs_diff(siaf->a.grad()[1], want_da2), 1e-5);
  EXPECT_GT(siaf->a.grad()[1].abs().min().item<float>(), 0.0f);
  EXPECT_EQ(siaf->b.grad()[1].abs().max().item<float>(), 0.0f);
  {
    torch::NoGradGuard g;
    siaf->a.copy_(torch::randn({2, 8}));
    siaf->b.copy_(torch::randn({2, 8}));
  }
  // sum_i a_i * silu(x + b_i), written out.
  const auto want = siaf->a[0] * (x + siaf->b[0]) * torch::sigmoid(x + siaf->b[0]) +
                    siaf->a[1] * (x + siaf->b[1]) * torch::sigmoid(x + siaf->b[1]);
  EXPECT_LT(max_abs_diff(siaf->forward(x), want), 1e-5);
}

TEST(SeriesInformedActivation, NeighbourConvolutionIsCausalAndIncremental) {
  torch::manual_seed(3);
  cn::SeriesInformedActivation siaf(
      cn::SeriesInformedActivationOptions(6).terms(2).neighbour_kernel(3));
  {
    torch::NoGradGuard g;
    siaf->a.copy_(torch::randn({2, 6}));
    siaf->b.copy_(torch::randn({2, 6}));
    siaf->neighbour.copy_(torch::randn({3, 6}));
  }
  const auto x = torch::randn({2, 7, 6});
  torch::NoGradGuard g;
  const auto s = concord::ops::siaf_reference(x, siaf->a, siaf->b);
  // y_t = w_0 s_t + w_1 s_{t-1} + w_2 s_{t-2}, zeros before the first token.
  auto want = torch::zeros_like(s);
  for (int64_t t = 0; t < 7; ++t) {
    for (int64_t j = 0; j < 3 && t - j >= 0; ++j) want.select(1, t).add_(siaf->neighbour[j] * s.select(1, t - j));
  }
  const auto full = siaf->forward(x);
  EXPECT_LT(max_abs_diff(full, want), 1e-5);
  // Token by token with the state gives the same outputs.
  at::Tensor state;
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < 7; ++t) {
    steps.push_back(siaf->forward_tokens(x.narrow(1, t, 1), {}, &state));
  }
  EXPECT_LT(max_abs_diff(torch::cat(steps, 1), full), 1e-6);
  // A padding position (valid = 0) contributes nothing to its neighbours.
  auto valid = torch::ones({2, 7});
  valid[0][0] = 0;
  valid[0][1] = 0;
  const auto masked = siaf->forward_tokens(x, valid, nullptr);
  const auto unpadded = siaf->forward_tokens(x.narrow(1, 2, 5), {}, nullptr);
  EXPECT_LT(max_abs_diff(masked[0].narrow(0, 2, 5), unpadded[0]), 1e-6);
}

TEST(AugmentedShortcut, StartsAtZeroAndIsASumOfBottlenecks) {
  torch::manual_seed(4);
  cn::AugmentedShortcut as(cn::AugmentedShortcutOptions(64).paths(3).reduction(8));
  EXPECT_EQ(as->bottleneck(), 8);
  int64_t n = 0;
  for (const auto& p : as->parameters()) n += p.numel();
  EXPECT_EQ(n, 3 * (64 * 8 + 8 + 8 * 64 + 64));
  const auto z = torch::randn({2, 5, 64});
  const auto y0 = as->forward(z);
  EXPECT_EQ(y0.abs().max().item<float>(), 0.0f);
  // FC2 is zero but learns: its gradient is GELU(FC1 z) times the incoming gradient.
  y0.sum().backward();
  EXPECT_GT(as->fc2_weight.grad().abs().sum().item<float>(), 0.0f);
  {
    torch::NoGradGuard g;
    as->fc2_weight.normal_();
    as->fc1_bias.normal_();
    as->fc2_bias.normal_();
  }
  torch::NoGradGuard g;
  auto want = torch::zeros_like(z);
  for (int64_t i = 0; i < 3; ++i) {
    const auto u = torch::gelu(torch::linear(z, as->fc1_weight[i], as->fc1_bias[i]));
    want += torch::linear(u, as->fc2_weight[i], as->fc2_bias[i]);
  }
  EXPECT_LT(max_abs_diff(as->forward(z), want), 1e-4);
}

TEST(Rope, RotatesEachPairByPositionTimesFrequency) {
  torch::manual_seed(5);
  const int64_t d = 8;
  const double theta = 100.0;
  const auto x = torch::randn({1, 1, 3, d});
  const auto pos = torch::tensor({{0, 5, 11}}, torch::kLong);
  auto [cos, sin] = cn::rope_tables(pos, d, theta, torch::kFloat);
  const auto y = cn::apply_rope(x, cos, sin);
  // Pair (x_i, x_{i + d/2}) is the complex number x_i + i x_{i+d/2}, rotated by p * theta^(-2i/d).
  for (int64_t t = 0; t < 3; ++t) {
    const double p = pos[0][t].item<double>();
    for (int64_t i = 0; i < d / 2; ++i) {
      const double angle = p * std::pow(theta, -2.0 * i / d);
      const double re = x[0][0][t][i].item<double>(), im = x[0][0][t][i + d / 2].item<double>();
      EXPECT_NEAR(y[0][0][t][i].item<double>(), re * std::cos(angle) - im * std::sin(angle), 1e-5);
      EXPECT_NEAR(y[0][0][t][i + d / 2].item<double>(), re * std::sin(angle) + im * std::cos(angle),
                  1e-5);
    }
  }
}

TEST(Attention, MaskIsCausalPaddedAndWindowed) {
  const auto key_mask = torch::tensor({{0, 1, 1, 1, 1}}, torch::kLong);
  const auto m = cn::causal_attention_mask(key_mask, 1, 2, 3, 2, torch::kCPU);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{1, 1, 3, 5}));
  // Queries at cache positions 2, 3, 4; window 2: keys q-1 and q; key 0 is padding.
  const std::vector<std::vector<int>> want = {{0, 1, 1, 0, 0}, {0, 0, 1, 1, 0}, {0, 0, 0, 1, 1}};
  for (int64_t q = 0; q < 3; ++q) {
    for (int64_t k = 0; k < 5; ++k) EXPECT_EQ(m[0][0][q][k].item<bool>(), want[q][k] == 1) << q << "," << k;
  }
}

TEST(Attention, GroupedQueryAttentionMatchesPerHeadSoftmax) {
  torch::manual_seed(6);
  const auto q = torch::randn({2, 4, 3, 8});
  const auto k = torch::randn({2, 2, 5, 8});
  const auto v = torch::randn({2, 2, 5, 8});
  const auto mask = cn::causal_attention_mask({}, 2, 2, 3, 0, torch::kCPU);
  const auto out = cn::attention_core(q, k, v, mask, 0.25);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t h = 0; h < 4; ++h) {
      for (int64_t t = 0; t < 3; ++t) {
        const int64_t kv = h / 2, visible = 2 + t + 1;
        const auto s = torch::mv(k[b][kv].narrow(0, 0, visible), q[b][h][t]) * 0.25;
        const auto w = torch::softmax(s, 0);
        const auto want = torch::mv(v[b][kv].narrow(0, 0, visible).t(), w);
        EXPECT_LT(max_abs_diff(out[b][h][t], want), 1e-5);
      }
    }
  }
  // A query that sees nothing (all keys padding) gets finite output, not NaN.
  const auto none = cn::causal_attention_mask(torch::zeros({2, 5}, torch::kLong), 2, 2, 3, 0,
                                              torch::kCPU);
  EXPECT_TRUE(torch::isfinite(cn::attention_core(q, k, v, none, 0.25)).all().item<bool>());
}

TEST(Attention, IncrementalDecodingEqualsFullForward) {
  torch::manual_seed(7);
  cn::CausalSelfAttention attn(cn::CausalSelfAttentionOptions(32, 4).kv_heads(2).qkv_bias(true));
  torch::NoGradGuard g;
  const auto x = torch::randn({2, 6, 32});
  const auto pos = torch::arange(6).unsqueeze(0).expand({2, 6});
  cn::AttentionContext full;
  std::tie(full.cos, full.sin) = cn::rope_tables(pos, 8, 10000.0, torch::kFloat);
  full.mask = cn::causal_attention_mask({}, 2, 0, 6, 0, torch::kCPU);
  const auto want = attn->forward(x, full);
  cn::KVCache cache(1);
  std::vector<at::Tensor> outs;
  for (int64_t t = 0; t < 6; ++t) {
    cn::AttentionContext step;
    std::tie(step.cos, step.sin) = cn::rope_tables(pos.narrow(1, t, 1), 8, 10000.0, torch::kFloat);
    step.mask = cn::causal_attention_mask({}, 2, t, 1, 0, torch::kCPU);
    outs.push_back(attn->forward(x.narrow(1, t, 1), step, &cache, 0));
    cache.advance(1);
  }
  EXPECT_LT(max_abs_diff(torch::cat(outs, 1), want), 1e-5);
}

TEST(KVCache, GrowsWithoutLosingTokens) {
  cn::KVCache cache(2);
  for (int64_t t = 0; t < 40; ++t) {  // past the initial capacity of 16 twice
    const auto k = torch::full({1, 2, 1, 4}, static_cast<float>(t));
    cache.append(0, k, -k);
    auto [all_k, all_v] = cache.append(1, k * 2, k);
    cache.advance(1);
    ASSERT_EQ(all_k.size(2), t + 1);
    EXPECT_EQ(all_k[0][1][t][3].item<float>(), 2.0f * t);
    EXPECT_EQ(all_v[0][0][0][0].item<float>(), 0.0f);
    if (t > 0) {
      EXPECT_EQ(all_k[0][0][t - 1][0].item<float>(), 2.0f * (t - 1));
    }
  }
  EXPECT_EQ(cache.length(), 40);
}

TEST(FeedForward, SwiGLUAndGeluMlpMatchTheirFormulas) {
  torch::manual_seed(8);
  torch::NoGradGuard g;
  const auto x = torch::randn({2, 3, 16});
  cn::FeedForward swiglu(cn::FeedForwardOptions(16, 24));
  const auto gate = torch::linear(x, swiglu->fc_in->weight.narrow(0, 0, 24));
  const auto up = torch::linear(x, swiglu->fc_in->weight.narrow(0, 24, 24));
  EXPECT_LT(max_abs_diff(swiglu->forward(x),
                         torch::linear(torch::silu(gate) * up, swiglu->fc_out->weight)),
            1e-5);
  cn::FeedForward mlp(cn::FeedForwardOptions(16, 64).gated(false).bias(true).activation(
      cn::FeedForwardActivation::GeluTanh));
  const auto h = torch::linear(x, mlp->fc_in->weight, mlp->fc_in->bias);
  // GELU, tanh form: 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))).
  const auto act = 0.5 * h * (1 + torch::tanh(std::sqrt(2.0 / M_PI) * (h + 0.044715 * h.pow(3))));
  EXPECT_LT(
      max_abs_diff(mlp->forward(x), torch::linear(act, mlp->fc_out->weight, mlp->fc_out->bias)),
      1e-5);
  // With SIAF on, a fresh FFN is the SwiGLU FFN with the same weights.
  cn::FeedForward with_siaf(cn::FeedForwardOptions(16, 24).siaf_terms(2));
  with_siaf->fc_in->weight.copy_(swiglu->fc_in->weight);
  with_siaf->fc_out->weight.copy_(swiglu->fc_out->weight);
  EXPECT_LT(max_abs_diff(with_siaf->forward(x), swiglu->forward(x)), 1e-6);
}
