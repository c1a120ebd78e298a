// Augmented shortcut (PanGu-π Eq. 4, sum of bottleneck branches): the fused two-GEMM path
// against the composite per-branch reference (values and all five gradients), central-difference
// gradient checks in fp64, input checks, the CPU kernel builds against each other, and (with a
// device) the CUDA path against the fp64 CPU reference.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/ops/augmented_shortcut.h"
#include "gradcheck.h"
#include "test_support.h"
#include "../../kernels/cpu/cpu_isa.h"

namespace {

using concord::ops::augmented_shortcut;
using concord::ops::augmented_shortcut_reference;

struct Params {
  torch::Tensor z, w1, b1, w2, b2;
};

Params make(std::vector<int64_t> zshape, int64_t T, int64_t h, torch::Dtype dtype) {
  const int64_t d = zshape.back();
  auto o = torch::dtype(dtype);
  return {torch::randn(zshape, o), torch::randn({T, h, d}, o) / std::sqrt(double(d)),
          torch::randn({T, h}, o), torch::randn({T, d, h}, o) / std::sqrt(double(h)),
          torch::randn({T, d}, o)};
}

template <class Op>
std::vector<torch::Tensor> run(Op op, const Params& p, const torch::Tensor& dout) {
  std::vector<torch::Tensor> in = {p.z, p.w1, p.b1, p.w2, p.b2};
  for (auto& t : in) t = t.detach().clone().requires_grad_(true);
  torch::Tensor out = op(in[0], in[1], in[2], in[3], in[4]);
  out.backward(dout);
  std::vector<torch::Tensor> res = {out.detach()};
  for (auto& t : in) res.push_back(t.grad());
  return res;
}

TEST(AugmentedShortcut, FusedMatchesReference) {
  torch::manual_seed(11);
  struct Case {
    std::vector<int64_t> z;
    int64_t T, h;
  };
  const Case cases[] = {{{1, 7}, 1, 3}, {{2, 5, 16}, 3, 4}, {{3, 33}, 2, 5}, {{4, 64, 96}, 4, 24}};
  const char* names[] = {"out", "dz", "dw1", "db1", "dw2", "db2"};
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    const double tol = dtype == torch::kFloat ? 1e-4 : 1e-10;
    for (const auto& c : cases) {
      Params p = make(c.z, c.T, c.h, dtype);
      auto dout = torch::randn(c.z, torch::dtype(dtype));
      auto got = run(augmented_shortcut, p, dout);
      auto want = run(augmented_shortcut_reference, p, dout);
      for (size_t k = 0; k < got.size(); ++k) {
        ASSERT_EQ(got[k].sizes(), want[k].sizes()) << names[k];
        const double scale = std::max(1.0, want[k].abs().max().item<double>());
        EXPECT_LE((got[k] - want[k]).abs().max().item<double>(), tol * scale)
            << names[k] << " " << c10::toString(dtype) << " z" << c10::str(c.z) << " T=" << c.T;
      }
    }
  }
}

// The bias + GELU pass has a baseline, an AVX2 and an AVX-512 build (kernels/cpu/cpu_isa.h):
// each one this CPU runs, against the fp64 composite. h = 5 and 24 put lane tails in play.
TEST(AugmentedShortcut, EveryCpuBuildMatchesReference) {
  namespace k = concord::kernels::cpu;
  torch::manual_seed(13);
  const char* names[] = {"out", "dz", "dw1", "db1", "dw2", "db2"};
  for (int isa = 0; isa <= static_cast<int>(k::cpu_isa_supported()); ++isa) {
    const k::CpuIsa previous = k::set_cpu_isa_cap(static_cast<k::CpuIsa>(isa));
    for (int64_t h : {5, 24}) {
      Params p = make({3, 11, 40}, 3, h, torch::kFloat);
      auto dout = torch::randn({3, 11, 40});
      auto got = run(augmented_shortcut, p, dout);
      Params pd{p.z.to(torch::kDouble), p.w1.to(torch::kDouble), p.b1.to(torch::kDouble),
                p.w2.to(torch::kDouble), p.b2.to(torch::kDouble)};
      auto want = run(augmented_shortcut_reference, pd, dout.to(torch::kDouble));
      for (size_t j = 0; j < got.size(); ++j) {
        const double scale = std::max(1.0, want[j].abs().max().item<double>());
        EXPECT_LE((got[j].to(torch::kDouble) - want[j]).abs().max().item<double>(), 1e-4 * scale)
            << names[j] << " " << k::cpu_isa_name(static_cast<k::CpuIsa>(isa)) << " h=" << h;
      }
    }
    k::set_cpu_isa_cap(previous);
  }
}

TEST(AugmentedShortcut, GradcheckFp64) {
  torch::manual_seed(12);
  Params p = make({2, 3, 4}, 2, 3, torch::kDouble);
  auto r = concord::testing::gradcheck(
      [](const std::vector<torch::Tensor>& in) {
        return augmented_shortcut(in[0], in[1], in[2], in[3], in[4]);
      },
      {p.z, p.w1, p.b1, p.w2, p.b2});
  EXPECT_TRUE(r.ok) << r.first_failure;
}

// One branch with identity-like weights: out = gelu(z + b1) + b2, checked against erf directly.
TEST(AugmentedShortcut, KnownValuesOneBranch) {
  auto o = torch::dtype(torch::kFloat);
  auto z = torch::linspace(-8, 8, 161, o).view({161, 1});
  auto w1 = torch::ones({1, 1, 1}, o), b1 = torch::full({1, 1}, 0.25f, o);
  auto w2 = torch::ones({1, 1, 1}, o), b2 = torch::full({1, 1}, -1.0f, o);
  auto out = augmented_shortcut(z, w1, b1, w2, b2).view({-1});
  for (int64_t i = 0; i < 161; ++i) {
    const double u = z[i][0].item<double>() + 0.25;
    const double want = u * 0.5 * std::erfc(-u / std::sqrt(2.0)) - 1.0;
    EXPECT_NEAR(out[i].item<double>(), want, 2e-6) << "u = " << u;
  }
}

TEST(AugmentedShortcut, InputChecks) {
  Params p = make({4, 8}, 2, 3, torch::kFloat);
  auto expect_error = [](const std::function<void()>& f, const std::string& fragment) {
    try {
      f();
      ADD_FAILURE() << "expected concord::Error mentioning '" << fragment << "'";
    } catch (const concord::Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([&] { augmented_shortcut(torch::randn({4, 7}), p.w1, p.b1, p.w2, p.b2); },
               "w1 must be [T, h, d] with d = 7");
  expect_error([&] { augmented_shortcut(p.z, p.w1, torch::randn({2, 4}), p.w2, p.b2); },
               "b1 must be [2, 3]");
  expect_error([&] { augmented_shortcut(p.z, p.w1, p.b1, torch::randn({2, 3, 8}), p.b2); },
               "w2 must be [2, 8, 3]");
  expect_error([&] { augmented_shortcut(p.z, p.w1, p.b1, p.w2, torch::randn({2})); },
               "b2 must be [2, 8]");
  expect_error([&] { augmented_shortcut(p.z.to(torch::kDouble), p.w1, p.b1, p.w2, p.b2); },
               "weights must have z's dtype");
}

// ---- CUDA: cuBLAS GEMMs + the bias + GELU kernels against the fp64 CPU reference --------------

TEST(AugmentedShortcut, MatchesCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(14);
  struct Case {
    std::vector<int64_t> z;
    int64_t T, h;
  };
  // h = 3, 5: the unvectorised kernels (T h not a multiple of the 16-byte pack); 24, 64: packed.
  const Case cases[] = {{{1, 7}, 1, 3}, {{2, 5, 16}, 3, 5}, {{4, 64, 96}, 4, 24},
                        {{2, 300, 256}, 2, 64}};
  const char* names[] = {"out", "dz", "dw1", "db1", "dw2", "db2"};
  const auto cuda = torch::Device(torch::kCUDA);
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    const double tol = dtype == torch::kFloat ? 1e-3 : 5e-2;
    for (const auto& c : cases) {
      Params p = make(c.z, c.T, c.h, torch::kFloat);
      auto dout = torch::randn(c.z);
      Params pc{p.z.to(cuda, dtype), p.w1.to(cuda, dtype), p.b1.to(cuda, dtype),
                p.w2.to(cuda, dtype), p.b2.to(cuda, dtype)};
      ASSERT_TRUE(concord::ops::augmented_shortcut_is_fused(pc.z));
      auto got = run(augmented_shortcut, pc, dout.to(cuda, dtype));
      // The reference from the same (rounded) values, in fp64 on the CPU.
      Params pd{pc.z.cpu().to(torch::kDouble), pc.w1.cpu().to(torch::kDouble),
                pc.b1.cpu().to(torch::kDouble), pc.w2.cpu().to(torch::kDouble),
                pc.b2.cpu().to(torch::kDouble)};
      auto want = run(augmented_shortcut_reference, pd, dout.to(dtype).to(torch::kDouble));
      for (size_t k = 0; k < got.size(); ++k) {
        ASSERT_EQ(got[k].sizes(), want[k].sizes()) << names[k];
        const double scale = std::max(1.0, want[k].abs().max().item<double>());
        EXPECT_LE((got[k].cpu().to(torch::kDouble) - want[k]).abs().max().item<double>(),
                  tol * scale)
            << names[k] << " " << c10::toString(dtype) << " z" << c10::str(c.z) << " T=" << c.T;
      }
    }
  }
}

}  // namespace
