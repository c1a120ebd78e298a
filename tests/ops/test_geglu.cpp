// GEGLU (arXiv 2002.05202, Eq. 5, diffusers' layout): the fused CPU kernels against the composite
// ATen reference (values and autograd gradients) over shapes that exercise every vector tail, on
// every CPU build (baseline, AVX2, AVX-512), central-difference gradients in fp64, known values,
// the composite fallback and the input checks.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "concord/ops/geglu.h"
#include "gradcheck.h"
#include "test_support.h"
#include "../../kernels/cpu/cpu_isa.h"

namespace {

using concord::ops::geglu;
using concord::ops::geglu_reference;

struct GegluResult {
  torch::Tensor y, dp;
};

template <class Op>
GegluResult run(Op op, const torch::Tensor& p, const torch::Tensor& dy) {
  auto pv = p.detach().clone().requires_grad_(true);
  torch::Tensor y = op(pv);
  y.backward(dy);
  return {y.detach(), pv.grad()};
}

void expect_within(const torch::Tensor& got, const torch::Tensor& want, double tol,
                   const std::string& what) {
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (want.numel() == 0) return;
  const double err = (got.to(torch::kDouble) - want.to(torch::kDouble)).abs().max().item<double>();
  EXPECT_LE(err, tol) << what;
}

// Phi(1) = 0.841344746..., so GELU(1) = 0.841344746 and GELU'(1) = Phi(1) + phi(1).
TEST(Geglu, KnownValues) {
  const auto p = torch::tensor({3.0, -2.0, 1.0, 0.0}, torch::kDouble).view({1, 4});
  const auto y = geglu(p);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_NEAR(y[0][0].item<double>(), 3.0 * 0.8413447460685429, 1e-12);
  EXPECT_NEAR(y[0][1].item<double>(), 0.0, 1e-15);  // GELU(0) = 0
  const auto dp = run(geglu, p, torch::ones({1, 2}, torch::kDouble)).dp;
  const double pdf1 = std::exp(-0.5) / std::sqrt(2 * M_PI);
  EXPECT_NEAR(dp[0][0].item<double>(), 0.8413447460685429, 1e-12);            // d/dhidden
  EXPECT_NEAR(dp[0][2].item<double>(), 3.0 * (0.8413447460685429 + pdf1), 1e-12);  // d/dgate
  EXPECT_NEAR(dp[0][3].item<double>(), -2.0 * 0.5, 1e-12);  // GELU'(0) = 1/2
}

TEST(Geglu, FusedMatchesReferenceOnEveryCpuBuild) {
  namespace k = concord::kernels::cpu;
  torch::manual_seed(0);
  const k::CpuIsa best = k::cpu_isa_supported();
  for (int isa = 0; isa <= static_cast<int>(best); ++isa) {
    const k::CpuIsa previous = k::set_cpu_isa_cap(static_cast<k::CpuIsa>(isa));
    // N = 1, 3, 17, 40 leave tails of every length below the 4, 8 and 16 lanes.
    for (const auto& shape : std::vector<std::vector<int64_t>>{
             {1, 2}, {5, 6}, {3, 4, 34}, {2, 7, 80}, {64, 2560}, {0, 8}}) {
      for (auto dtype : {torch::kFloat, torch::kDouble}) {
        const auto p = torch::randn(shape, dtype) * 3;
        auto half = shape;
        half.back() /= 2;
        const auto dy = torch::randn(half, dtype);
        ASSERT_TRUE(concord::ops::geglu_is_fused(p));
        const GegluResult fused = run(geglu, p, dy), ref = run(geglu_reference, p, dy);
        const double tol = dtype == torch::kFloat ? 2e-5 : 1e-12;
        const std::string what = std::string(k::cpu_isa_name(static_cast<k::CpuIsa>(isa))) + " " +
                                 torch::toString(dtype) + " " + std::to_string(p.numel());
        expect_within(fused.y, ref.y, tol, what + " y");
        if (p.numel() > 0) expect_within(fused.dp, ref.dp, tol, what + " dp");
      }
    }
    k::set_cpu_isa_cap(previous);
  }
}

TEST(Geglu, NonContiguousInputAndInference) {
  torch::manual_seed(1);
  const auto base = torch::randn({6, 5, 12});
  const auto p = base.transpose(0, 1);  // [5, 6, 12], not contiguous
  ASSERT_FALSE(p.is_contiguous());
  expect_within(geglu(p), geglu_reference(p), 2e-6, "non-contiguous");
  torch::InferenceMode inference;
  expect_within(geglu(base), geglu_reference(base), 2e-6, "inference mode");
}

TEST(Geglu, GradcheckFp64) {
  torch::manual_seed(2);
  const auto r = concord::testing::gradcheck(
      [](const std::vector<torch::Tensor>& in) { return geglu(in[0]); },
      {torch::randn({3, 2, 10}, torch::kDouble) * 2});
  EXPECT_TRUE(r.ok) << r.first_failure;
}

TEST(Geglu, SwitchOffRunsTheComposite) {
  const auto p = torch::randn({4, 8});
  concord::ops::FusedOpsGuard off(false);
  EXPECT_FALSE(concord::ops::geglu_is_fused(p));
  EXPECT_TRUE(torch::equal(geglu(p), geglu_reference(p)));
}

TEST(Geglu, BadInputNamesTheProblem) {
  try {
    geglu(torch::randn({2, 5}));
    FAIL() << "expected concord::Error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[..., 2N]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(geglu(torch::ones({2, 4}, torch::kLong)), concord::Error);
}

}  // namespace
