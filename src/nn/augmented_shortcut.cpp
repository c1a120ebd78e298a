#include "concord/nn/augmented_shortcut.h"

#include <cmath>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"
#include "concord/ops/augmented_shortcut.h"

namespace concord::nn {

AugmentedShortcutImpl::AugmentedShortcutImpl(AugmentedShortcutOptions o) : options(std::move(o)) {
  reset();
}

int64_t AugmentedShortcutImpl::bottleneck() const {
  return std::max<int64_t>(1, (options.dim() + options.reduction() - 1) / options.reduction());
}

void AugmentedShortcutImpl::reset() {
  CONCORD_CHECK(options.dim() > 0, "AugmentedShortcut: dim must be positive, got ", options.dim());
  CONCORD_CHECK(options.paths() >= 1, "AugmentedShortcut: paths must be >= 1, got ",
                options.paths());
  CONCORD_CHECK(options.reduction() >= 1, "AugmentedShortcut: reduction must be >= 1, got ",
                options.reduction());
  const int64_t t = options.paths(), d = options.dim(), h = bottleneck();
  fc1_weight = register_parameter("fc1_weight", torch::empty({t, h, d}));
  fc2_weight = register_parameter("fc2_weight", torch::empty({t, d, h}));
  if (options.bias()) {
    fc1_bias = register_parameter("fc1_bias", torch::empty({t, h}));
    fc2_bias = register_parameter("fc2_bias", torch::empty({t, d}));
  }
  reset_parameters();
}

void AugmentedShortcutImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(options.dim()));
  fc1_weight.uniform_(-bound, bound);
  fc2_weight.zero_();
  if (fc1_bias.defined()) fc1_bias.zero_();
  if (fc2_bias.defined()) fc2_bias.zero_();
}

at::Tensor AugmentedShortcutImpl::forward(const at::Tensor& z) {
  TORCH_CHECK(z.size(-1) == options.dim(), "AugmentedShortcut: expected last dim ", options.dim(),
              ", got ", z.sizes());
  // Without biases the op gets zeros that nothing differentiates: the fused path adds them in
  // the same pass it applies GELU in, so they cost nothing worth a second code path.
  const int64_t t = options.paths(), d = options.dim(), h = bottleneck();
  const at::Tensor b1 = fc1_bias.defined() ? fc1_bias : at::zeros({t, h}, fc1_weight.options());
  const at::Tensor b2 = fc2_bias.defined() ? fc2_bias : at::zeros({t, d}, fc2_weight.options());
  return record_output(*this, ops::augmented_shortcut(z, fc1_weight, b1, fc2_weight, b2));
}

void AugmentedShortcutImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::AugmentedShortcut(dim=" << options.dim() << ", paths=" << options.paths()
         << ", reduction=" << options.reduction() << ", bottleneck=" << bottleneck() << ")";
}

}  // namespace concord::nn
