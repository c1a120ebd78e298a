// 3x3 convolution (stride 1, padding 1): the Winograd F(4x4, 3x3) forward against ATen's
// convolution over shapes that leave every remainder (image sides not a multiple of 4, K not a
// multiple of the 6-row groups or the 48-row panels, tiles not a multiple of the vector blocks,
// the padded row stride) on every CPU build, known values, autograd gradients against ATen's,
// when `conv3x3` picks Winograd (mode, dtype, switch, size), and the input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/ops/conv3x3.h"
#include "concord/ops/fused.h"
#include "compare.h"
#include "test_support.h"
#include "../../kernels/cpu/cpu_isa.h"
#include "../../kernels/cpu/winograd.h"

namespace {

using concord::ops::conv3x3;
using concord::ops::conv3x3_reference;
using concord::ops::conv3x3_uses_winograd;
using concord::ops::conv3x3_winograd_forward;
using concord::ops::conv3x3_winograd_weight_grad;
using concord::ops::Conv3x3Winograd;
using concord::testing::expect_close;
using concord::testing::expect_error;

using WinogradMode = concord::ops::Conv3x3WinogradGuard;

struct Case {
  int64_t N, C, K, H, W;
};

// F(4x4, 3x3) in fp32 against a direct convolution, outputs of order 1: its transforms multiply
// by up to 8 (A^T) and 5 (B^T), so it rounds ~10x more than a direct sum (2.4e-5 at C = 64,
// 5e-5 at 256, 1.3e-4 at 512 measured); a wrong tap or tile is off by the outputs' own size.
constexpr double kTol = 5e-5;

// Weights scaled so that each output is of order 1 whatever C is.
torch::Tensor weights(int64_t K, int64_t C) {
  return torch::randn({K, C, 3, 3}) / std::sqrt(9.0 * C);
}

TEST(Conv3x3, TransformsAreTheRowStridesAndTilesTheyClaim) {
  namespace k = concord::kernels::cpu;
  EXPECT_EQ(k::winograd_tiles(1), 1);
  EXPECT_EQ(k::winograd_tiles(8), 2);
  EXPECT_EQ(k::winograd_tiles(9), 3);
  EXPECT_EQ(k::winograd_row_stride(1), 16);
  EXPECT_EQ(k::winograd_row_stride(128), 128);
  EXPECT_EQ(k::winograd_row_stride(256), 272);  // a multiple of 1 KiB is padded
  EXPECT_EQ(k::winograd_row_stride(2048), 2064);
}

// x = 1 everywhere and w = 1: each output counts the 3x3 neighbours inside the image.
TEST(Conv3x3, KnownValues) {
  const auto x = torch::ones({1, 1, 5, 6});
  const auto w = torch::ones({1, 1, 3, 3});
  const auto b = torch::full({1}, 0.5);
  const auto y = conv3x3_winograd_forward(x, w, b);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 1, 5, 6}));
  EXPECT_NEAR(y[0][0][0][0].item<float>(), 4.5f, 1e-5);  // a corner: 4 neighbours
  EXPECT_NEAR(y[0][0][0][3].item<float>(), 6.5f, 1e-5);  // an edge: 6
  EXPECT_NEAR(y[0][0][2][2].item<float>(), 9.5f, 1e-5);  // inside: 9
  EXPECT_NEAR(y[0][0][4][5].item<float>(), 4.5f, 1e-5);
  // A single tap: w = delta at (0, 2) shifts the image by (+1 row, -1 column).
  const auto ramp = torch::arange(30, torch::kFloat).view({1, 1, 5, 6});
  auto shift = torch::zeros({1, 1, 3, 3});
  shift[0][0][0][2] = 1;
  const auto s = conv3x3_winograd_forward(ramp, shift);
  EXPECT_NEAR(s[0][0][2][3].item<float>(), ramp[0][0][1][4].item<float>(), 1e-4);
  EXPECT_NEAR(s[0][0][0][3].item<float>(), 0.0f, 1e-4);  // row -1: the padding
  EXPECT_NEAR(s[0][0][2][5].item<float>(), 0.0f, 1e-4);  // column 6: the padding
}

TEST(Conv3x3, WinogradMatchesAtenOnEveryCpuBuild) {
  namespace k = concord::kernels::cpu;
  torch::manual_seed(0);
  const std::vector<Case> cases = {{1, 1, 1, 1, 1},    {1, 3, 5, 4, 4},    {2, 5, 7, 5, 7},
                                   {3, 17, 13, 9, 13}, {1, 8, 50, 12, 3},  {2, 16, 6, 16, 16},
                                   {4, 8, 12, 32, 32},  // T = 256: the padded row stride
                                   {1, 33, 97, 7, 30}, {2, 64, 64, 16, 16}};
  const k::CpuIsa best = k::cpu_isa_supported();
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    const k::CpuIsa previous = k::set_cpu_isa_cap(static_cast<k::CpuIsa>(isa));
    for (const Case& c : cases) {
      const auto x = torch::randn({c.N, c.C, c.H, c.W});
      const auto w = weights(c.K, c.C);
      const auto b = torch::randn({c.K});
      const std::string what = std::string(k::cpu_isa_name(static_cast<k::CpuIsa>(isa))) + " " +
                               c10::str(x.sizes()) + " -> " + std::to_string(c.K);
      expect_close(conv3x3_winograd_forward(x, w, b), conv3x3_reference(x, w, b), 0, kTol,
                   what + " with bias");
      expect_close(conv3x3_winograd_forward(x, w), conv3x3_reference(x, w), 0, kTol,
                   what + " without bias");
    }
    k::set_cpu_isa_cap(previous);
  }
}

// ATen's weight gradient of conv2d(x, w, padding 1) for dy.
torch::Tensor aten_weight_grad(const torch::Tensor& x, const torch::Tensor& dy) {
  const auto w = torch::zeros({dy.size(1), x.size(1), 3, 3});
  return std::get<1>(at::convolution_backward(dy, x, w, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false,
                                              {0, 0}, 1, {false, true, false}));
}

// The weight gradient sums x . dy over every pixel, so its size grows as sqrt(N H W) for
// unit inputs; Winograd's rounding, relative to that size, is held to what the forward's is.
TEST(Conv3x3, WinogradWeightGradientMatchesAtenOnEveryCpuBuild) {
  namespace k = concord::kernels::cpu;
  torch::manual_seed(3);
  const std::vector<Case> cases = {{1, 1, 1, 1, 1},    {1, 3, 5, 4, 4},     {2, 5, 7, 5, 7},
                                   {3, 17, 13, 9, 13}, {1, 8, 50, 12, 3},   {2, 16, 6, 16, 16},
                                   {4, 8, 12, 32, 32},  // T = 256: the padded row stride
                                   {1, 33, 97, 7, 30}, {2, 64, 64, 16, 16}, {1, 40, 20, 6, 6}};
  const k::CpuIsa best = k::cpu_isa_supported();
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    const k::CpuIsa previous = k::set_cpu_isa_cap(static_cast<k::CpuIsa>(isa));
    for (const Case& c : cases) {
      const auto x = torch::randn({c.N, c.C, c.H, c.W});
      const auto dy = torch::randn({c.N, c.K, c.H, c.W});
      const std::string what = std::string(k::cpu_isa_name(static_cast<k::CpuIsa>(isa))) + " " +
                               c10::str(x.sizes()) + " -> " + std::to_string(c.K);
      const auto want = aten_weight_grad(x, dy);
      const double scale = std::sqrt(static_cast<double>(c.N * c.H * c.W));
      expect_close(conv3x3_winograd_weight_grad(x, dy), want, 0, kTol * scale, what);
    }
    k::set_cpu_isa_cap(previous);
  }
}

// A planted filter: with dy = conv(x, w*) for one output channel and x = a single impulse at
// (r, c), dw[k, c', i, j] = sum_p dy[p] x[p + (i - 1, j - 1)] = dy at the impulse minus the
// offset; an impulse at a tile's corner, an edge and the image's last pixel checks that each
// offset lands in its tap and that the cropped outputs of edge tiles carry no gradient.
TEST(Conv3x3, WinogradWeightGradientKnownValues) {
  for (const auto& [r, c] : std::vector<std::pair<int64_t, int64_t>>{{0, 0}, {3, 4}, {6, 6}}) {
    auto x = torch::zeros({1, 1, 7, 7});
    x.index_put_({0, 0, r, c}, 1.0f);
    const auto dy = torch::arange(49, torch::kFloat).reshape({1, 1, 7, 7});
    const auto dw = conv3x3_winograd_weight_grad(x, dy);
    for (int64_t i = 0; i < 3; ++i) {
      for (int64_t j = 0; j < 3; ++j) {
        // y[p] += w[i, j] x[p + (i - 1, j - 1)], so the impulse at (r, c) reaches p = (r - i + 1,
        // c - j + 1) when that is inside the image.
        const int64_t pr = r - i + 1, pc = c - j + 1;
        const bool inside = pr >= 0 && pr < 7 && pc >= 0 && pc < 7;
        EXPECT_NEAR(dw[0][0][i][j].item<float>(), inside ? 7.0f * pr + pc : 0.0f, 1e-4)
            << "impulse at " << r << "," << c << " tap " << i << "," << j;
      }
    }
  }
}

// Each output of a product block, a tile or a plane is written by one thread alone, so the bits
// do not depend on the thread count (koala_kd resumes bit-exactly at another one).
TEST(Conv3x3, SameBitsAtOneAndTwoThreads) {
  torch::manual_seed(5);
  const auto x = torch::randn({2, 24, 20, 20}), w = weights(100, 24), b = torch::randn({100});
  const int previous = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = conv3x3_winograd_forward(x, w, b);
  at::set_num_threads(2);
  const auto two = conv3x3_winograd_forward(x, w, b);
  const auto dy = torch::randn({2, 100, 20, 20});
  at::set_num_threads(1);
  const auto dw_one = conv3x3_winograd_weight_grad(x, dy);
  at::set_num_threads(2);
  const auto dw_two = conv3x3_winograd_weight_grad(x, dy);
  at::set_num_threads(previous);
  EXPECT_TRUE(torch::equal(one, two));
  EXPECT_TRUE(torch::equal(dw_one, dw_two));
}

TEST(Conv3x3, NonContiguousInputsAreRead) {
  torch::manual_seed(1);
  const auto x = torch::randn({2, 16, 9, 20}).transpose(2, 3);  // [2, 16, 20, 9], strided
  const auto w = weights(16, 16).permute({0, 1, 3, 2});
  expect_close(conv3x3_winograd_forward(x, w), conv3x3_reference(x, w), 0, kTol, "strided");
}

// The input gradient (dy convolved with the flipped, transposed filters) and the weight gradient
// are Winograd's too, so they agree with ATen's to Winograd's rounding; the bias gradient is dy
// summed.
TEST(Conv3x3, GradientsMatchAtensWhereWinogradRuns) {
  torch::manual_seed(2);
  const auto x0 = torch::randn({2, 32, 16, 16});
  const auto w0 = weights(40, 32), b0 = torch::randn({40});
  const auto dy = torch::randn({2, 40, 16, 16});
  ASSERT_TRUE(conv3x3_uses_winograd(x0, w0));
  for (bool bias : {true, false}) {
    auto x = x0.clone().requires_grad_(true), w = w0.clone().requires_grad_(true);
    auto b = bias ? b0.clone().requires_grad_(true) : torch::Tensor();
    auto xr = x0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
    auto br = bias ? b0.clone().requires_grad_(true) : torch::Tensor();
    const auto y = conv3x3(x, w, b), yr = conv3x3_reference(xr, wr, br);
    expect_close(y, yr, 0, kTol, "y");
    // The forward is Winograd's, not ATen's: the two round differently.
    EXPECT_GT((y - yr).abs().max().item<double>(), 0.0);
    y.backward(dy);
    yr.backward(dy);
    expect_close(x.grad(), xr.grad(), 0, kTol, "dx");
    EXPECT_GT((x.grad() - xr.grad()).abs().max().item<double>(), 0.0);  // Winograd's, not ATen's
    expect_close(w.grad(), wr.grad(), 0, kTol * 16 * std::sqrt(2.0), "dw");
    EXPECT_GT((w.grad() - wr.grad()).abs().max().item<double>(), 0.0);  // Winograd's, not ATen's
    if (bias) expect_close(b.grad(), br.grad(), 1e-6, 1e-4, "db");
  }
  // Only the weight needs a gradient (a frozen input, as a KD teacher's features are).
  auto w = w0.clone().requires_grad_(true), wr = w0.clone().requires_grad_(true);
  conv3x3(x0, w, b0).backward(dy);
  conv3x3_reference(x0, wr, b0).backward(dy);
  expect_close(w.grad(), wr.grad(), 0, kTol * 16 * std::sqrt(2.0), "dw alone");
}

TEST(Conv3x3, PicksWinogradWhereItPays) {
  const auto w32 = torch::randn({32, 32, 3, 3});
  EXPECT_TRUE(conv3x3_uses_winograd(torch::randn({2, 32, 16, 16}), w32));  // 32 tiles
  EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({2, 32, 8, 8}), w32));   // 8 tiles
  EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({2, 16, 32, 32}), torch::randn({32, 16, 3, 3})));
  EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({2, 32, 32, 32}), torch::randn({16, 32, 3, 3})));
  EXPECT_FALSE(
      conv3x3_uses_winograd(torch::randn({2, 32, 16, 16}, torch::kDouble), w32.to(torch::kDouble)));
  {
    WinogradMode always(Conv3x3Winograd::kAlways);
    EXPECT_TRUE(conv3x3_uses_winograd(torch::randn({1, 1, 2, 2}), torch::randn({1, 1, 3, 3})));
    EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({1, 1, 2, 2}, torch::kDouble),
                                       torch::randn({1, 1, 3, 3}, torch::kDouble)));
  }
  {
    WinogradMode never(Conv3x3Winograd::kNever);
    EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({2, 32, 16, 16}), w32));
  }
  concord::ops::FusedOpsGuard off(false);
  EXPECT_FALSE(conv3x3_uses_winograd(torch::randn({2, 32, 16, 16}), w32));
}

TEST(Conv3x3, ElsewhereItIsAtensConvolution) {
  torch::manual_seed(3);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const auto x = torch::randn({2, 16, 8, 8}, dtype), w = torch::randn({16, 16, 3, 3}, dtype);
    EXPECT_TRUE(torch::equal(conv3x3(x, w), conv3x3_reference(x, w))) << dtype;
  }
  WinogradMode never(Conv3x3Winograd::kNever);
  const auto x = torch::randn({2, 32, 16, 16}), w = torch::randn({32, 32, 3, 3});
  EXPECT_TRUE(torch::equal(conv3x3(x, w), conv3x3_reference(x, w)));
}

// On a GPU conv3x3 is ATen's convolution (cuDNN) under autograd, at any size.
TEST(Conv3x3, OnCudaIsAtensConvolution_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(4);
  const auto cuda = torch::Device(torch::kCUDA);
  const auto x = torch::randn({2, 32, 32, 32}, torch::device(cuda));
  const auto w = weights(32, 32).to(cuda).requires_grad_(true);
  const auto b = torch::randn({32}, torch::device(cuda));
  EXPECT_FALSE(conv3x3_uses_winograd(x, w));
  const auto y = conv3x3(x, w, b);
  EXPECT_TRUE(torch::equal(y, conv3x3_reference(x, w, b)));
  y.sum().backward();
  ASSERT_TRUE(w.grad().defined());
  // cuDNN may run fp32 convolutions in TF32 (LibTorch's default allows it): 10 mantissa bits.
  expect_close(y.cpu(), conv3x3_reference(x.cpu(), w.detach().cpu(), b.cpu()), 1e-3, 5e-3,
               "against the CPU");
}

TEST(Conv3x3, InputChecksNameTheTensor) {
  const auto x = torch::randn({1, 4, 8, 8}), w = torch::randn({6, 4, 3, 3});
  expect_error([&] { conv3x3(x[0], w); }, "x must be [N, C, H, W], got [4, 8, 8]");
  expect_error(
      [&] {
        conv3x3(x, torch::randn({6, 4, 5, 5}));
      },
      "weight must be [K, C, 3, 3], got [6, 4, 5, 5]");
  expect_error(
      [&] {
        conv3x3(x, torch::randn({6, 3, 3, 3}));
      },
      "weight has 3 input channels, x has 4");
  expect_error([&] { conv3x3(x, w, torch::randn({5})); }, "bias must be [6], got [5]");
  expect_error([&] { conv3x3_winograd_forward(x.to(torch::kDouble), w.to(torch::kDouble)); },
               "CPU fp32 tensors only");
  expect_error(
      [&] {
        conv3x3_winograd_weight_grad(x, torch::randn({1, 6, 8, 7}));
      },
      "dy must be [N, K, H, W] for x [1, 4, 8, 8], got [1, 6, 8, 7]");
  expect_error(
      [&] {
        conv3x3_winograd_weight_grad(x.to(torch::kDouble), torch::randn({1, 6, 8, 8}));
      },
      "CPU fp32 tensors only");
}

}  // namespace
