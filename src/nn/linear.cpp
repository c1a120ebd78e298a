#include "concord/nn/linear.h"

#include <vector>

namespace concord::nn {

at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  if (x.dim() < 1 || x.numel() != x.size(-1) || !x.device().is_cpu()) {
    return at::linear(x, weight, bias);
  }
  const int64_t in = x.size(-1);
  // One row: gemv. The result keeps x's leading (all-1) dimensions.
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = weight.size(0);
  const at::Tensor v = x.reshape({in});
  const at::Tensor y = bias.defined() ? at::addmv(bias, weight, v) : at::mv(weight, v);
  return y.view(shape);
}

}  // namespace concord::nn
