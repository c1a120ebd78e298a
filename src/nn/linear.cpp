#include "concord/nn/linear.h"

#include <vector>

#include <ATen/core/grad_mode.h>

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

}  // namespace concord::nn
