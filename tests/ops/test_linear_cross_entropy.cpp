// ops::linear_cross_entropy (the fused LM-head loss) and kernels/cpu/cross_entropy: loss and
// both gradients against the composite in double precision, over shapes that cut across the
// kernel's class blocks (512) and token tiles (64) and the op's token chunks, on every ISA build;
// the incoming gradient, a retained graph's second backward, the kernel on -inf / huge logits,
// thread-count independence, the errors, and the fallbacks.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "../../kernels/cpu/cpu_isa.h"
#include "../../kernels/cpu/cross_entropy.h"
#include "concord/core/error.h"
#include "compare.h"
#include "concord/ops/fused.h"
#include "concord/ops/linear_cross_entropy.h"

namespace kcpu = concord::kernels::cpu;
using concord::ops::LinearCrossEntropyOptions;
using concord::testing::rel_diff;

namespace {

struct CrossEntropyResult {
  at::Tensor loss, dh, dw;
};

// Loss and gradients of `op` (fused or reference) at hidden/weight, for an incoming gradient
// of `upstream`.
template <class Op>
CrossEntropyResult run(Op op, const at::Tensor& hidden, const at::Tensor& weight,
                       const at::Tensor& targets, const LinearCrossEntropyOptions& o,
                       double upstream = 1.0) {
  at::Tensor h = hidden.detach().clone().requires_grad_(true);
  at::Tensor w = weight.detach().clone().requires_grad_(true);
  at::Tensor loss = op(h, w, targets, o);
  (loss * upstream).backward();
  return {loss.detach(), h.grad(), w.grad()};
}

at::Tensor fused(const at::Tensor& h, const at::Tensor& w, const at::Tensor& t,
                 const LinearCrossEntropyOptions& o) {
  return concord::ops::linear_cross_entropy(h, w, t, o);
}
at::Tensor reference(const at::Tensor& h, const at::Tensor& w, const at::Tensor& t,
                     const LinearCrossEntropyOptions& o) {
  return concord::ops::linear_cross_entropy_reference(h, w, t, o);
}

// Targets in [0, V), every third one ignored.
at::Tensor targets_with_ignored(std::vector<int64_t> shape, int64_t V) {
  at::Tensor t = torch::randint(V, shape, torch::kLong);
  t.view({-1}).slice(0, 1, t.numel(), 3).fill_(-100);
  return t;
}

}  // namespace

TEST(LinearCrossEntropy, MatchesDoubleCompositeAcrossBlocksTilesChunksAndBuilds) {
  torch::manual_seed(21);
  struct Shape {
    int64_t N, d, V;
  };
  // V 1100: three class blocks, the last partial; N 130: two whole token tiles and a 2-wide one.
  const std::vector<Shape> shapes = {{1, 3, 5}, {7, 16, 513}, {130, 24, 1100}, {65, 8, 64}};
  for (auto cap : {kcpu::CpuIsa::kBaseline, kcpu::CpuIsa::kAvx2, kcpu::CpuIsa::kAvx512}) {
    const auto previous = kcpu::set_cpu_isa_cap(cap);
    for (const auto& s : shapes) {
      const at::Tensor h = torch::randn({s.N, s.d}), w = torch::randn({s.V, s.d}) * 0.5;
      const at::Tensor t = targets_with_ignored({s.N}, s.V);
      for (auto reduction : {at::Reduction::Mean, at::Reduction::Sum}) {
        for (int64_t chunk : {int64_t(0), int64_t(3), int64_t(64)}) {
          LinearCrossEntropyOptions o;
          o.reduction = reduction;
          o.chunk_tokens = chunk;
          ASSERT_TRUE(concord::ops::linear_cross_entropy_is_fused(h, w));
          const CrossEntropyResult f = run(fused, h, w, t, o);
          const CrossEntropyResult r = run(reference, h.to(at::kDouble), w.to(at::kDouble), t, o);
          const std::string where = std::string(kcpu::cpu_isa_name(kcpu::cpu_isa())) + " N " +
                                    std::to_string(s.N) + " V " + std::to_string(s.V) +
                                    " chunk " + std::to_string(chunk) +
                                    (reduction == at::Reduction::Sum ? " sum" : " mean");
          EXPECT_LT(rel_diff(f.loss, r.loss), 2e-6) << where;
          EXPECT_LT(rel_diff(f.dh, r.dh), 2e-5) << where;
          EXPECT_LT(rel_diff(f.dw, r.dw), 2e-5) << where;
          EXPECT_EQ(f.dh.sizes(), h.sizes());
          EXPECT_EQ(f.dw.sizes(), w.sizes());
        }
      }
    }
    kcpu::set_cpu_isa_cap(previous);
  }
}

TEST(LinearCrossEntropy, LeadingDimsIncomingGradientAndRetainedGraph) {
  torch::manual_seed(22);
  const at::Tensor h = torch::randn({2, 9, 12}), w = torch::randn({700, 12});
  const at::Tensor t = targets_with_ignored({2, 9}, 700);
  LinearCrossEntropyOptions o;
  const CrossEntropyResult f = run(fused, h, w, t, o, -2.5);
  const CrossEntropyResult r = run(reference, h.to(at::kDouble), w.to(at::kDouble), t, o, -2.5);
  EXPECT_LT(rel_diff(f.dh, r.dh), 2e-5);
  EXPECT_LT(rel_diff(f.dw, r.dw), 2e-5);
  EXPECT_EQ(f.dh.sizes(), h.sizes());

  // A retained graph's second backward recomputes what the first one handed over: the
  // gradients accumulate to exactly twice one backward's.
  at::Tensor hh = h.clone().requires_grad_(true), ww = w.clone().requires_grad_(true);
  at::Tensor loss = concord::ops::linear_cross_entropy(hh, ww, t, o);
  loss.backward({}, /*retain_graph=*/true);
  const at::Tensor once_h = hh.grad().clone(), once_w = ww.grad().clone();
  loss.backward();
  EXPECT_TRUE(hh.grad().equal(once_h * 2));
  EXPECT_TRUE(ww.grad().equal(once_w * 2));

  // Only one input wanting a gradient, and none (no-grad mode): the same loss.
  at::Tensor only_w = w.clone().requires_grad_(true);
  at::Tensor loss_w = concord::ops::linear_cross_entropy(h, only_w, t, o);
  loss_w.backward();
  EXPECT_LT(rel_diff(only_w.grad(), r.dw / -2.5), 2e-5);
  torch::NoGradGuard no_grad;
  EXPECT_EQ(concord::ops::linear_cross_entropy(h, w, t, o).item<float>(), loss.item<float>());
}

// The same loss inside InferenceMode (evaluation), under autograd, and from two threads at once.
TEST(LinearCrossEntropy, SameLossInInferenceModeTrainingAndTwoThreads) {
  torch::manual_seed(24);
  const at::Tensor h = torch::randn({40, 16}), w = torch::randn({900, 16});
  const at::Tensor t = torch::randint(900, {40}, torch::kLong);
  double eval_loss = 0;
  {
    c10::InferenceMode inference;
    eval_loss = concord::ops::linear_cross_entropy(h, w, t).item<double>();
  }
  const CrossEntropyResult f = run(fused, h, w, t, {});
  EXPECT_EQ(f.loss.item<double>(), eval_loss);
  std::vector<double> losses(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      for (int rep = 0; rep < 5; ++rep) {
        losses[i] = concord::ops::linear_cross_entropy(h, w, t).item<double>();
      }
    });
  }
  for (auto& th : threads) th.join();
  // (A new std::thread may run OpenMP at another thread count: BLAS blocking may differ.)
  EXPECT_NEAR(losses[0], eval_loss, 1e-6 * std::abs(eval_loss));
  EXPECT_NEAR(losses[1], eval_loss, 1e-6 * std::abs(eval_loss));
}

TEST(LinearCrossEntropy, AllIgnoredMeanIsNaNAndSumIsZero) {
  const at::Tensor h = torch::randn({4, 5}), w = torch::randn({11, 5});
  const at::Tensor t = torch::full({4}, -100, torch::kLong);
  LinearCrossEntropyOptions o;
  EXPECT_TRUE(std::isnan(concord::ops::linear_cross_entropy(h, w, t, o).item<double>()));
  EXPECT_TRUE(std::isnan(concord::ops::linear_cross_entropy_reference(h, w, t, o).item<double>()));
  o.reduction = at::Reduction::Sum;
  const CrossEntropyResult f = run(fused, h, w, t, o);
  EXPECT_EQ(f.loss.item<double>(), 0.0);
  EXPECT_EQ(f.dh.abs().max().item<double>(), 0.0);
  EXPECT_EQ(f.dw.abs().max().item<double>(), 0.0);
}

TEST(LinearCrossEntropy, BadInputsThrowOneLineErrors) {
  const at::Tensor h = torch::randn({3, 4}), w = torch::randn({10, 4});
  auto message = [&](const at::Tensor& hh, const at::Tensor& ww, const at::Tensor& tt) {
    try {
      concord::ops::linear_cross_entropy(hh, ww, tt);
    } catch (const concord::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(h, w, torch::tensor({1, 10, 2}, torch::kLong)).find("target 10 at position 1"),
            std::string::npos);
  EXPECT_NE(message(h, w, torch::tensor({1, -3, 2}, torch::kLong)).find("target -3"),
            std::string::npos);
  EXPECT_NE(message(h, torch::randn({10, 5}), torch::tensor({1, 2, 3}, torch::kLong))
                .find("hidden is [3, 4] but weight is [10, 5]"),
            std::string::npos);
  EXPECT_NE(message(h, w, torch::tensor({1, 2}, torch::kLong)).find("leading shape"),
            std::string::npos);
  EXPECT_NE(message(h, w, torch::tensor({1, 2, 3}, torch::kInt)).find("int64"), std::string::npos);
  for (const std::string& m : {message(h, w, torch::tensor({1, 10, 2}, torch::kLong))}) {
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

TEST(LinearCrossEntropy, FallsBackToTheCompositeOffTheFusedPath) {
  const at::Tensor h = torch::randn({5, 6}, torch::kDouble);
  const at::Tensor w = torch::randn({9, 6}, torch::kDouble);
  const at::Tensor t = torch::randint(9, {5}, torch::kLong);
  EXPECT_FALSE(concord::ops::linear_cross_entropy_is_fused(h, w));
  EXPECT_NEAR(concord::ops::linear_cross_entropy(h, w, t).item<double>(),
              at::cross_entropy_loss(at::linear(h, w), t).item<double>(), 1e-12);
  const at::Tensor hf = h.to(at::kFloat), wf = w.to(at::kFloat);
  concord::ops::FusedOpsGuard off(false);
  EXPECT_FALSE(concord::ops::linear_cross_entropy_is_fused(hf, wf));
  EXPECT_TRUE(concord::ops::linear_cross_entropy(hf, wf, t)
                  .equal(at::cross_entropy_loss(at::linear(hf, wf), t)));
}

// The kernel alone: -inf logits (one block column entirely), logits in the thousands, and a NaN
// column, against log-sum-exp in double; the same bits at one and two threads.
TEST(XentKernel, StableOnInfiniteAndHugeLogitsAndThreadIndependent) {
  torch::manual_seed(23);
  const int64_t V = 1300, N = 70;
  at::Tensor z = torch::randn({V, N}) * 1000;
  const float inf = std::numeric_limits<float>::infinity();
  z.narrow(0, 512, 512).select(1, 5).fill_(-inf);  // block 1 of token 5: all -inf
  z.select(1, 6).narrow(0, 0, 600).fill_(-inf);     // token 6: most classes impossible
  z[17][9] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor expect = at::logsumexp(z.to(at::kDouble), 0);
  const int threads = at::get_num_threads();
  std::vector<at::Tensor> results;
  for (int n : {1, 2}) {
    at::set_num_threads(n);
    at::Tensor e = z.clone();
    std::vector<float> block_max(static_cast<size_t>(kcpu::xent_blocks(V) * N));
    at::Tensor lse = torch::empty({N});
    kcpu::xent_forward(e.data_ptr<float>(), V, N, N, block_max.data(), lse.data_ptr<float>());
    results.push_back(lse);
    // exp(l - m_b) <= 1 everywhere it is defined
    EXPECT_LE(e.nan_to_num(0).max().item<float>(), 1.0f);
  }
  at::set_num_threads(threads);
  EXPECT_TRUE(results[0].equal(results[1]) ||
              (results[0].isnan().equal(results[1].isnan()) &&
               results[0].nan_to_num(0).equal(results[1].nan_to_num(0))));
  const at::Tensor lse = results[0].to(at::kDouble);
  EXPECT_TRUE(std::isnan(lse[9].item<double>()));
  at::Tensor finite = torch::ones({N}, torch::kBool);
  finite[9] = false;
  EXPECT_LT(((lse - expect).abs() / expect.abs()).masked_select(finite).max().item<double>(), 1e-6);
}
