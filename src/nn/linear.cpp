#include "concord/nn/linear.h"

#include <cmath>
#include <vector>

#include <ATen/core/grad_mode.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/init.h"
#include "concord/ops/matvec.h"

namespace concord::nn {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (x.dim() < 1 || x.numel() != x.size(-1) || !x.device().is_cpu()) {
    return at::linear(x, weight, bias);
  }
  const int64_t in = x.size(-1);
  // One row: a matrix-vector product. The result keeps x's leading (all-1) dimensions. Without
  // gradients to track (generation runs under InferenceMode) it goes to ops::matvec, which
  // splits the weight rows over the threads; with them, to ATen's differentiable addmv.
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  const at::Tensor v = x.reshape({in});
  const bool track = at::GradMode::is_enabled() &&
                     (x.requires_grad() || weight.requires_grad() ||
                      (bias.defined() && bias.requires_grad()));
  if (!track) return ops::matvec(weight, v.contiguous(), bias).view(shape);
  const at::Tensor y = bias.defined() ? at::addmv(bias, weight, v) : at::mv(weight, v);
  return y.view(shape);
}

// ---- the module ------------------------------------------------------------------------------

LinearImpl::LinearImpl(LinearOptions o) : options(std::move(o)) { reset(); }

void LinearImpl::reset() {
  CONCORD_CHECK(options.in_features() > 0 && options.out_features() > 0,
                "Linear: in_features and out_features must be positive, got ",
                options.in_features(), ", ", options.out_features());
  weight = register_parameter("weight",
                              torch::empty({options.out_features(), options.in_features()}));
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.out_features()}));
  } else {
    bias = register_parameter("bias", {}, /*requires_grad=*/false);
  }
  if (!skip_init_enabled()) reset_parameters();
}

void LinearImpl::reset_parameters() {
  // torch::nn::Linear's draws, in its order, so models built from these modules consume the
  // random stream exactly as they did when built from torch::nn::Linear.
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(options.in_features()));
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

at::Tensor LinearImpl::forward(const at::Tensor& x) { return linear(x, weight, bias); }

void LinearImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::Linear(in_features=" << options.in_features()
         << ", out_features=" << options.out_features()
         << ", bias=" << (options.bias() ? "true" : "false") << ")";
}

}  // namespace concord::nn
