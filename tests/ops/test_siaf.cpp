// SIAF (PanGu-π Eq. 7): the fused CPU kernels against the composite ATen reference (values and
// autograd gradients) over a sweep of shapes, central-difference gradient checks in fp64, known
// values, bf16 with fp32 accumulation, input checks, and (with a device) CUDA against CPU.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/ops/siaf.h"
#include "compare.h"
#include "gradcheck.h"
#include "test_support.h"
#include "../../kernels/cpu/cpu_isa.h"

namespace {

using concord::ops::Activation;
using concord::ops::siaf;
using concord::ops::siaf_reference;
using concord::testing::expect_close;
using concord::testing::expect_error;

const Activation kAll[] = {Activation::SiLU, Activation::GELU, Activation::ReLU};

struct Grads {
  torch::Tensor y, dx, da, db;
};

// Forward and autograd backward of `op` with output gradient dy.
template <class Op>
Grads run(Op op, const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b,
          const torch::Tensor& dy, Activation act) {
  auto xv = x.detach().clone().requires_grad_(true);
  auto av = a.detach().clone().requires_grad_(true);
  auto bv = b.detach().clone().requires_grad_(true);
  torch::Tensor y = op(xv, av, bv, act);
  y.backward(dy);
  return {y.detach(), xv.grad(), av.grad(), bv.grad()};
}

TEST(Siaf, ActivationNames) {
  EXPECT_EQ(concord::ops::activation_from_name("SiLU"), Activation::SiLU);
  EXPECT_EQ(concord::ops::activation_from_name("swish"), Activation::SiLU);
  EXPECT_EQ(concord::ops::activation_from_name("gelu"), Activation::GELU);
  EXPECT_EQ(concord::ops::activation_from_name("relu"), Activation::ReLU);
  try {
    concord::ops::activation_from_name("tanh");
    FAIL() << "expected concord::Error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("silu, gelu, relu"), std::string::npos) << e.what();
  }
}

// Eq. 7 by hand: a = [[2], [3]], b = [[0], [1]], x = 1.
TEST(Siaf, KnownValues) {
  auto opts = torch::dtype(torch::kDouble);
  auto x = torch::tensor({1.0}, opts), a = torch::tensor({{2.0}, {3.0}}, opts),
       b = torch::tensor({{0.0}, {1.0}}, opts);
  // 2 silu(1) + 3 silu(2)
  EXPECT_NEAR(siaf(x, a, b, Activation::SiLU).item<double>(),
              2 * 0.7310585786300049 + 3 * 1.7615941559557646, 1e-12);
  // 2 gelu(1) + 3 gelu(2), gelu(t) = t Phi(t)
  EXPECT_NEAR(siaf(x, a, b, Activation::GELU).item<double>(),
              2 * 0.8413447460685429 + 3 * 2 * 0.9772498680518208, 1e-12);
  auto xn = torch::tensor({-0.5}, opts);  // relu(-0.5) = 0, relu(0.5) = 0.5
  EXPECT_NEAR(siaf(xn, a, b, Activation::ReLU).item<double>(), 3 * 0.5, 1e-15);
  // d/dx at x = 1 for SiLU: 2 silu'(1) + 3 silu'(2), silu'(t) = s (1 + t (1 - s))
  auto s1 = 0.7310585786300049, s2 = 0.8807970779778823;
  auto g = concord::ops::siaf_backward(torch::ones_like(x), x, a, b, Activation::SiLU);
  EXPECT_NEAR(g.dx.item<double>(), 2 * s1 * (1 + (1 - s1)) + 3 * s2 * (1 + 2 * (1 - s2)), 1e-12);
  EXPECT_NEAR(g.da[0][0].item<double>(), 0.7310585786300049, 1e-12);
  EXPECT_NEAR(g.db[1][0].item<double>(), 3 * s2 * (1 + 2 * (1 - s2)), 1e-12);
}

struct SiafCase {
  std::vector<int64_t> shape;  // x's shape; the last dim is C
  int64_t n;
};

const SiafCase kSiafSweep[] = {
    {{1}, 1},          {{1, 7}, 2},    {{3, 5, 13}, 2},  {{64, 33}, 3},
    {{2, 17, 257}, 2}, {{300, 31}, 1}, {{4, 96, 96}, 2}, {{5, 0, 8}, 2},
};

TEST(Siaf, FusedMatchesReferenceFp32AndFp64) {
  torch::manual_seed(1);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const double rtol = dtype == torch::kFloat ? 2e-5 : 1e-12;
    const double atol = dtype == torch::kFloat ? 2e-5 : 1e-12;
    for (const auto& c : kSiafSweep) {
      for (Activation act : kAll) {
        const int64_t C = c.shape.back();
        auto opts = torch::dtype(dtype);
        auto x = 3 * torch::randn(c.shape, opts);
        auto a = torch::randn({c.n, C}, opts);
        auto b = torch::randn({c.n, C}, opts);
        auto dy = torch::randn(c.shape, opts);
        ASSERT_TRUE(concord::ops::siaf_is_fused(x));
        Grads fused = run(siaf, x, a, b, dy, act);
        Grads ref = run(siaf_reference, x, a, b, dy, act);
        std::string what = std::string(concord::ops::activation_name(act)) + " " +
                           std::string(c10::toString(dtype)) + " x" +
                           c10::str(c.shape) + " n=" + std::to_string(c.n);
        expect_close(fused.y, ref.y, rtol, atol, what + " y");
        expect_close(fused.dx, ref.dx, rtol, atol, what + " dx");
        // da/db sum over rows: scale the tolerance with the number of terms summed.
        const double rows = std::max<double>(1, x.numel() / std::max<int64_t>(C, 1));
        expect_close(fused.da, ref.da, rtol, atol * std::sqrt(rows), what + " da");
        expect_close(fused.db, ref.db, rtol, atol * std::sqrt(rows), what + " db");
      }
    }
  }
}

// The fp32 kernels have a baseline (SSE2), an AVX2 and an AVX-512 build; cpu_isa() runs the
// best one, so every build this CPU can run is checked here by capping the choice. Shapes put
// lane tails (C % 16 and C % 8 non-zero) and row-block tails (rows % 4 non-zero) in play.
TEST(Siaf, EveryCpuBuildMatchesReference) {
  namespace k = concord::kernels::cpu;
  const SiafCase cases[] = {{{1, 5}, 2},      {{7, 16}, 2},    {{6, 47}, 3}, {{13, 33}, 1},
                            {{2, 9, 100}, 2}, {{4, 1, 24}, 2}, {{5, 200}, 4}};
  const k::CpuIsa best = k::cpu_isa_supported();
  torch::manual_seed(11);
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    const k::CpuIsa previous = k::set_cpu_isa_cap(static_cast<k::CpuIsa>(isa));
    ASSERT_EQ(k::cpu_isa(), static_cast<k::CpuIsa>(isa));
    for (const auto& c : cases) {
      for (Activation act : kAll) {
        const int64_t C = c.shape.back();
        auto x = 3 * torch::randn(c.shape), a = torch::randn({c.n, C}),
             b = torch::randn({c.n, C}), dy = torch::randn(c.shape);
        Grads fused = run(siaf, x, a, b, dy, act);
        Grads ref = run(siaf_reference, x.to(torch::kDouble), a.to(torch::kDouble),
                        b.to(torch::kDouble), dy.to(torch::kDouble), act);
        const std::string what = std::string(k::cpu_isa_name(static_cast<k::CpuIsa>(isa))) +
                                 " " + concord::ops::activation_name(act) + " x" +
                                 c10::str(c.shape) + " n=" + std::to_string(c.n);
        const double rows = static_cast<double>(x.numel() / C);
        expect_close(fused.y, ref.y, 2e-5, 2e-5, what + " y");
        expect_close(fused.dx, ref.dx, 2e-5, 2e-5, what + " dx");
        expect_close(fused.da, ref.da, 2e-5, 2e-5 * std::sqrt(rows), what + " da");
        expect_close(fused.db, ref.db, 2e-5, 2e-5 * std::sqrt(rows), what + " db");
      }
    }
    k::set_cpu_isa_cap(previous);
  }
}

// Outputs of >= 4 MiB get huge-page advice before the kernel writes them (src/ops/output.h);
// the result must not depend on it.
TEST(Siaf, LargeOutputMatchesReference) {
  torch::manual_seed(12);
  auto x = 3 * torch::randn({300, 4096}), a = torch::randn({2, 4096}), b = torch::randn({2, 4096});
  auto dy = torch::randn({300, 4096});
  Grads fused = run(siaf, x, a, b, dy, Activation::SiLU);
  Grads ref = run(siaf_reference, x, a, b, dy, Activation::SiLU);
  expect_close(fused.y, ref.y, 2e-5, 2e-5, "y");
  expect_close(fused.dx, ref.dx, 2e-5, 2e-5, "dx");
  expect_close(fused.da, ref.da, 2e-5, 2e-5 * std::sqrt(300.0), "da");
  expect_close(fused.db, ref.db, 2e-5, 2e-5 * std::sqrt(300.0), "db");
}

TEST(Siaf, ForwardBackwardFunctionsMatchAutograd) {
  torch::manual_seed(2);
  auto x = torch::randn({6, 11}), a = torch::randn({2, 11}), b = torch::randn({2, 11});
  auto dy = torch::randn({6, 11});
  Grads ref = run(siaf_reference, x, a, b, dy, Activation::GELU);
  expect_close(concord::ops::siaf_forward(x, a, b, Activation::GELU), ref.y, 2e-5, 2e-5, "y");
  auto g = concord::ops::siaf_backward(dy, x, a, b, Activation::GELU);
  expect_close(g.dx, ref.dx, 2e-5, 2e-5, "dx");
  expect_close(g.da, ref.da, 2e-5, 5e-5, "da");
  expect_close(g.db, ref.db, 2e-5, 5e-5, "db");
}

TEST(Siaf, NonContiguousInput) {
  torch::manual_seed(3);
  auto x = torch::randn({9, 4}).t();  // [4, 9], channels strided
  auto a = torch::randn({2, 9}), b = torch::randn({2, 9}), dy = torch::randn({4, 9});
  Grads fused = run(siaf, x, a, b, dy, Activation::SiLU);
  Grads ref = run(siaf_reference, x, a, b, dy, Activation::SiLU);
  expect_close(fused.y, ref.y, 2e-5, 2e-5, "y");
  expect_close(fused.dx, ref.dx, 2e-5, 2e-5, "dx");
  expect_close(fused.da, ref.da, 2e-5, 5e-5, "da");
}

TEST(Siaf, GradcheckFp64EachActivation) {
  torch::manual_seed(4);
  for (Activation act : kAll) {
    for (int64_t n : {1, 2, 3}) {
      auto x = 2 * torch::randn({3, 2, 5}, torch::kDouble);
      auto a = torch::randn({n, 5}, torch::kDouble), b = torch::randn({n, 5}, torch::kDouble);
      ASSERT_TRUE(concord::ops::siaf_is_fused(x));
      auto r = concord::testing::gradcheck(
          [act](const std::vector<torch::Tensor>& in) { return siaf(in[0], in[1], in[2], act); },
          {x, a, b});
      EXPECT_TRUE(r.ok) << concord::ops::activation_name(act) << " n=" << n << ": "
                        << r.first_failure;
    }
  }
}

// The checker itself must catch a wrong gradient, or the test above proves nothing.
TEST(Siaf, GradcheckRejectsWrongGradient) {
  struct Wrong : public torch::autograd::Function<Wrong> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
      ctx->save_for_backward({x});
      return x * x;
    }
    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list g) {
      return {g[0] * ctx->get_saved_variables()[0]};  // should be 2x
    }
  };
  auto r = concord::testing::gradcheck(
      [](const std::vector<torch::Tensor>& in) { return Wrong::apply(in[0]); },
      {torch::randn({4}, torch::kDouble)});
  EXPECT_FALSE(r.ok);
}

TEST(Siaf, Bf16AccumulatesInFp32) {
  torch::manual_seed(5);
  auto x = torch::randn({128, 40}).to(torch::kBFloat16);
  auto a = torch::randn({2, 40}).to(torch::kBFloat16), b = torch::randn({2, 40}).to(torch::kBFloat16);
  auto dy = torch::randn({128, 40}).to(torch::kBFloat16);
  ASSERT_TRUE(concord::ops::siaf_is_fused(x));
  for (Activation act : kAll) {
    Grads fused = run(siaf, x, a, b, dy, act);
    EXPECT_EQ(fused.y.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(fused.da.scalar_type(), torch::kBFloat16);
    // Reference in fp64 from the same bf16 values: the only error left is bf16 output rounding
    // (2^-8 relative), not 128 bf16 additions in da.
    Grads ref = run(siaf_reference, x.to(torch::kDouble), a.to(torch::kDouble),
                    b.to(torch::kDouble), dy.to(torch::kDouble), act);
    expect_close(fused.y, ref.y, 1e-2, 1e-2, "bf16 y");
    expect_close(fused.dx, ref.dx, 1e-2, 1e-2, "bf16 dx");
    expect_close(fused.da, ref.da, 1e-2, 2e-2, "bf16 da");
    expect_close(fused.db, ref.db, 1e-2, 2e-2, "bf16 db");
  }
}

TEST(Siaf, ExtremeInputsStayFinite) {
  auto x = torch::tensor({-1e4f, -100.f, -20.f, 0.f, 20.f, 100.f, 1e4f}).view({1, 7});
  auto a = torch::ones({1, 7}), b = torch::zeros({1, 7});
  for (Activation act : kAll) {
    Grads fused = run(siaf, x, a, b, torch::ones_like(x), act);
    Grads ref = run(siaf_reference, x, a, b, torch::ones_like(x), act);
    EXPECT_TRUE(torch::isfinite(fused.y).all().item<bool>());
    EXPECT_TRUE(torch::isfinite(fused.dx).all().item<bool>());
    expect_close(fused.y, ref.y, 1e-6, 1e-6, std::string(concord::ops::activation_name(act)));
    expect_close(fused.dx, ref.dx, 1e-6, 1e-6, std::string(concord::ops::activation_name(act)));
  }
}

TEST(Siaf, BackwardIsDeterministic) {
  torch::manual_seed(6);
  auto x = torch::randn({512, 64}), a = torch::randn({2, 64}), b = torch::randn({2, 64});
  auto dy = torch::randn({512, 64});
  auto g1 = concord::ops::siaf_backward(dy, x, a, b, Activation::SiLU);
  auto g2 = concord::ops::siaf_backward(dy, x, a, b, Activation::SiLU);
  EXPECT_TRUE(torch::equal(g1.da, g2.da));
  EXPECT_TRUE(torch::equal(g1.db, g2.db));
  EXPECT_TRUE(torch::equal(g1.dx, g2.dx));
}

TEST(Siaf, InputChecks) {
  auto x = torch::randn({4, 6}), a = torch::randn({2, 6}), b = torch::randn({2, 6});
  expect_error([&] { siaf(x, torch::randn({2, 5}), b); }, "x has C = 6");
  expect_error([&] { siaf(x, a, torch::randn({3, 6})); }, "b must have a's shape [2, 6]");
  expect_error([&] { siaf(x, torch::randn({6}), b); }, "a must be [n, C]");
  expect_error([&] { siaf(x, torch::randn({0, 6}), torch::randn({0, 6})); }, "n >= 1");
  expect_error([&] { siaf(torch::randn({}), a, b); }, "scalar");
  expect_error([&] { siaf(x.to(torch::kDouble), a, b); }, "share a dtype");
  expect_error([&] { siaf(torch::ones({4, 6}, torch::kLong), a, b); }, "floating point");
  expect_error([&] { siaf(x, a, b, static_cast<Activation>(7)); }, "invalid activation");
  expect_error([&] { concord::ops::siaf_backward(torch::randn({4, 5}), x, a, b); },
               "dy must have x's shape [4, 6]");
}

// ---- CUDA: each backend against the CPU result -------------------------------------------------

TEST(Siaf, MatchesCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(7);
  // Otherwise this would compare the composite with itself (a build without CUDA dispatch).
  ASSERT_TRUE(concord::ops::siaf_is_fused(torch::zeros({2, 8}, torch::device(torch::kCUDA))));
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    const double tol = dtype == torch::kFloat ? 2e-5 : 2e-2;
    for (const auto& c : kSiafSweep) {
      for (Activation act : kAll) {
        const int64_t C = c.shape.back();
        auto x = (2 * torch::randn(c.shape)).to(dtype);
        auto a = torch::randn({c.n, C}).to(dtype), b = torch::randn({c.n, C}).to(dtype);
        auto dy = torch::randn(c.shape).to(dtype);
        auto cuda = torch::Device(torch::kCUDA);
        Grads got = run(siaf, x.to(cuda), a.to(cuda), b.to(cuda), dy.to(cuda), act);
        Grads want = run(siaf_reference, x.to(torch::kDouble), a.to(torch::kDouble),
                         b.to(torch::kDouble), dy.to(torch::kDouble), act);
        const double rows = std::max<double>(1, x.numel() / std::max<int64_t>(C, 1));
        std::string what = std::string(concord::ops::activation_name(act)) + " " +
                           c10::toString(dtype) + " x" + c10::str(c.shape);
        expect_close(got.y.cpu(), want.y, tol, tol, what + " y");
        expect_close(got.dx.cpu(), want.dx, tol, tol, what + " dx");
        expect_close(got.da.cpu(), want.da, tol, tol * std::sqrt(rows), what + " da");
        expect_close(got.db.cpu(), want.db, tol, tol * std::sqrt(rows), what + " db");
      }
    }
  }
}

}  // namespace
