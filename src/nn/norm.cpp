#include "concord/nn/norm.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"

namespace concord::nn {

RMSNormImpl::RMSNormImpl(RMSNormOptions options_) : options(std::move(options_)) { reset(); }

void RMSNormImpl::reset() {
  CONCORD_CHECK(options.dim() > 0, "RMSNorm: dim must be positive, got ", options.dim());
  CONCORD_CHECK(options.eps() >= 0, "RMSNorm: eps must be >= 0, got ", options.eps());
  weight = register_parameter("weight", torch::ones({options.dim()}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  TORCH_CHECK(x.size(-1) == options.dim(), "RMSNorm: expected last dim ", options.dim(), ", got ",
              x.sizes());
  // Statistics in fp32 so bf16/fp16 activations normalise as transformers does.
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor inv = at::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + options.eps());
  if (options.scale_before_cast()) return record_output(*this, (weight * (xf * inv)).to(x.scalar_type()));
  return record_output(*this, weight * (xf * inv).to(x.scalar_type()));
}

void RMSNormImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::RMSNorm(" << options.dim() << ", eps=" << options.eps() << ")";
}

}  // namespace concord::nn
