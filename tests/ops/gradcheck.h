// A small central-difference gradient checker for the ops tests (LibTorch 1.13's C++ API has no
// torch::autograd::gradcheck). For L(inputs) = sum(f(inputs) * w) with a fixed random w, it
// compares autograd's dL/d(input) with (L(input + eps e_j) - L(input - eps e_j)) / (2 eps) for
// every element j of every input. Use double inputs and small sizes.
#pragma once
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace concord::testing {

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string first_failure;  // "input 1 element 7: analytic 0.1 numeric 0.2"
};

inline GradcheckResult gradcheck(
    const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f,
    std::vector<torch::Tensor> inputs, double eps = 1e-6, double atol = 1e-7,
    double rtol = 1e-5) {
  GradcheckResult result;
  for (auto& t : inputs) t = t.detach().clone().to(torch::kDouble).requires_grad_(true);
  torch::Tensor out = f(inputs);
  torch::Tensor w = torch::randn(out.sizes(), out.options().requires_grad(false));
  auto analytic = torch::autograd::grad({(out * w).sum()}, inputs, {}, false, false, true);

  torch::NoGradGuard no_grad;
  auto loss = [&]() { return (f(inputs) * w).sum().item<double>(); };
  for (size_t k = 0; k < inputs.size(); ++k) {
    torch::Tensor flat = inputs[k].view({-1});
    torch::Tensor grad = analytic[k].defined() ? analytic[k].reshape({-1})
                                                : torch::zeros_like(flat);
    for (int64_t j = 0; j < flat.numel(); ++j) {
      const double orig = flat[j].item<double>();
      flat[j] = orig + eps;
      const double up = loss();
      flat[j] = orig - eps;
      const double down = loss();
      flat[j] = orig;
      const double numeric = (up - down) / (2 * eps);
      const double got = grad[j].item<double>();
      const double err = std::abs(got - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (err > atol + rtol * std::abs(numeric) && result.ok) {
        result.ok = false;
        std::ostringstream msg;
        msg << "input " << k << " element " << j << ": analytic " << got << " numeric "
            << numeric;
        result.first_failure = msg.str();
      }
    }
  }
  return result;
}

}  // namespace concord::testing
