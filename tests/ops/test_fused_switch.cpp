// The process-wide fused-ops switch (concord/ops/fused.h): off, every op reports and runs its
// composite reference; on, the fused kernels; both give the same values and gradients, and the
// guard restores the previous setting.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/ops/attention.h"
#include "concord/ops/augmented_shortcut.h"
#include "concord/ops/fused.h"
#include "concord/ops/siaf.h"
#include "test_support.h"

using concord::testing::max_abs_diff;

namespace {

using concord::ops::FusedOpsGuard;

// Runs f on fresh leaf copies of `in` and returns [output, grad of each input].
template <class F>
std::vector<torch::Tensor> value_and_grads(F f, const std::vector<torch::Tensor>& in) {
  std::vector<torch::Tensor> leaves;
  for (const auto& t : in) leaves.push_back(t.detach().clone().requires_grad_(true));
  torch::Tensor out = f(leaves);
  torch::manual_seed(99);
  out.backward(torch::randn_like(out));
  std::vector<torch::Tensor> res{out.detach()};
  for (const auto& t : leaves) res.push_back(t.grad());
  return res;
}

template <class F>
void expect_same_either_way(F f, const std::vector<torch::Tensor>& in, double tol,
                            const char* what) {
  std::vector<torch::Tensor> fused, composite;
  {
    FusedOpsGuard on(true);
    fused = value_and_grads(f, in);
  }
  {
    FusedOpsGuard off(false);
    composite = value_and_grads(f, in);
  }
  ASSERT_EQ(fused.size(), composite.size());
  for (size_t i = 0; i < fused.size(); ++i) {
    EXPECT_LE(max_abs_diff(fused[i], composite[i]), tol) << what << " tensor " << i;
  }
}

TEST(FusedOps, SwitchTurnsEveryOpToItsComposite) {
  const auto x = torch::randn({2, 3, 8}), q = torch::randn({1, 2, 5, 8});
  ASSERT_TRUE(concord::ops::fused_ops_enabled());
  EXPECT_TRUE(concord::ops::siaf_is_fused(x));
  EXPECT_TRUE(concord::ops::augmented_shortcut_is_fused(x));
  EXPECT_TRUE(concord::ops::attention_is_fused(q));
  {
    FusedOpsGuard off(false);
    EXPECT_FALSE(concord::ops::fused_ops_enabled());
    EXPECT_FALSE(concord::ops::siaf_is_fused(x));
    EXPECT_FALSE(concord::ops::augmented_shortcut_is_fused(x));
    EXPECT_FALSE(concord::ops::attention_is_fused(q));
    {
      FusedOpsGuard on(true);
      EXPECT_TRUE(concord::ops::siaf_is_fused(x));
    }
    EXPECT_FALSE(concord::ops::siaf_is_fused(x));
  }
  EXPECT_TRUE(concord::ops::fused_ops_enabled());
}

// The composite side really is a different code path: the fused SIAF Function saves only x, a,
// b, so its graph has one node for the op, the composite several.
TEST(FusedOps, SwitchChangesTheAutogradGraph) {
  auto x = torch::randn({4, 6}).requires_grad_(true);
  auto a = torch::randn({2, 6}), b = torch::randn({2, 6});
  std::string fused_node, composite_node;
  {
    FusedOpsGuard on(true);
    fused_node = concord::ops::siaf(x, a, b).grad_fn()->name();
  }
  {
    FusedOpsGuard off(false);
    composite_node = concord::ops::siaf(x, a, b).grad_fn()->name();
  }
  EXPECT_NE(fused_node, composite_node) << fused_node;
}

TEST(FusedOps, SameValuesAndGradientsEitherWay) {
  torch::manual_seed(3);
  expect_same_either_way(
      [](const std::vector<torch::Tensor>& t) {
        return concord::ops::siaf(t[0], t[1], t[2], concord::ops::Activation::SiLU);
      },
      {torch::randn({3, 7, 40}), torch::randn({2, 40}), torch::randn({2, 40})}, 1e-4, "siaf");
  expect_same_either_way(
      [](const std::vector<torch::Tensor>& t) {
        return concord::ops::augmented_shortcut(t[0], t[1], t[2], t[3], t[4]);
      },
      {torch::randn({2, 9, 32}), 0.2 * torch::randn({2, 4, 32}), torch::randn({2, 4}),
       0.2 * torch::randn({2, 32, 4}), torch::randn({2, 32})},
      1e-4, "augmented_shortcut");
  expect_same_either_way(
      [](const std::vector<torch::Tensor>& t) {
        return concord::ops::attention(t[0], t[1], t[2],
                                       concord::ops::AttentionOptions().causal(true));
      },
      {torch::randn({2, 4, 33, 16}), torch::randn({2, 2, 33, 16}), torch::randn({2, 2, 33, 16})},
      1e-4, "attention");
}

}  // namespace
