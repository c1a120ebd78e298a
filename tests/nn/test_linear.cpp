// nn::linear (concord/nn/linear.h): the single-row gemv path equals at::linear, values and
// gradients, and every other shape goes through at::linear unchanged.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/nn/linear.h"

TEST(Linear, SingleRowPathMatchesAtLinearWithGradients) {
  torch::manual_seed(3);
  const at::Tensor w = torch::randn({48, 40}, torch::kDouble).requires_grad_();
  const at::Tensor b = torch::randn({48}, torch::kDouble).requires_grad_();
  for (const auto& shape : std::vector<std::vector<int64_t>>{{40}, {1, 40}, {1, 1, 40}, {3, 40}, {2, 5, 40}}) {
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(::testing::Message() << "rows " << shape.size() << " bias " << with_bias);
      const at::Tensor x = torch::randn(shape, torch::kDouble).requires_grad_();
      const at::Tensor bias = with_bias ? b : at::Tensor();
      const at::Tensor ours = concord::nn::linear(x, w, bias);
      const at::Tensor ref = at::linear(x, w, bias);
      ASSERT_EQ(ours.sizes(), ref.sizes());
      EXPECT_LT((ours - ref).abs().max().item<double>(), 1e-12);
      const at::Tensor g = torch::randn(ref.sizes(), torch::kDouble);
      const auto ours_grad = torch::autograd::grad({ours}, {x, w}, {g});
      const auto ref_grad = torch::autograd::grad({ref}, {x, w}, {g});
      for (size_t i = 0; i < 2; ++i) {
        EXPECT_LT((ours_grad[i] - ref_grad[i]).abs().max().item<double>(), 1e-12) << i;
      }
    }
  }
}

// Without gradients a single row goes to ops::matvec (the parallel fp32 kernel); its result
// equals at::linear up to float summation order.
TEST(Linear, SingleRowWithoutGradientsTakesTheMatvecKernel) {
  torch::manual_seed(4);
  const at::Tensor w = torch::randn({301, 77});
  const at::Tensor b = torch::randn({301});
  const at::Tensor x = torch::randn({1, 1, 77});
  c10::InferenceMode guard;
  for (bool with_bias : {true, false}) {
    const at::Tensor bias = with_bias ? b : at::Tensor();
    const at::Tensor ours = concord::nn::linear(x, w, bias);
    const at::Tensor ref = at::linear(x.to(at::kDouble), w.to(at::kDouble),
                                      with_bias ? b.to(at::kDouble) : at::Tensor());
    ASSERT_EQ(ours.sizes(), ref.sizes());
    EXPECT_LT((ours.to(at::kDouble) - ref).abs().max().item<double>(), 1e-4) << with_bias;
  }
}
