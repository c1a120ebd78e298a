#include "concord/nn/siaf.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"

namespace concord::nn {

SeriesInformedActivationImpl::SeriesInformedActivationImpl(SeriesInformedActivationOptions o)
    : options(std::move(o)) {
  reset();
}

void SeriesInformedActivationImpl::reset() {
  CONCORD_CHECK(options.channels() > 0, "SeriesInformedActivation: channels must be positive, got ",
                options.channels());
  CONCORD_CHECK(options.terms() >= 1, "SeriesInformedActivation: terms must be >= 1, got ",
                options.terms());
  CONCORD_CHECK(options.neighbour_kernel() >= 0,
                "SeriesInformedActivation: neighbour_kernel must be >= 0, got ",
                options.neighbour_kernel());
  a = register_parameter("a", torch::zeros({options.terms(), options.channels()}));
  b = register_parameter("b", torch::zeros({options.terms(), options.channels()}));
  if (has_neighbour()) {
    neighbour = register_parameter("neighbour",
                                   torch::zeros({options.neighbour_kernel(), options.channels()}));
  }
  reset_parameters();
}

void SeriesInformedActivationImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  a.zero_();
  b.zero_();
  a[0].fill_(1.0);
  for (int64_t i = 1; i < options.terms(); ++i) {
    // b_i = (i-1) * 0.5 * (-1)^i in the paper's 1-based numbering (i here is 0-based).
    const double sign = (i % 2 == 1) ? 1.0 : -1.0;
    b[i].fill_(sign * 0.5 * static_cast<double>(i));
  }
  if (neighbour.defined()) {
    neighbour.zero_();
    neighbour[0].fill_(1.0);
  }
}

at::Tensor SeriesInformedActivationImpl::forward(const at::Tensor& x) {
  if (!has_neighbour()) return record_output(*this, ops::siaf(x, a, b, options.activation()));
  TORCH_CHECK(x.dim() == 3, "SeriesInformedActivation: with a neighbour kernel x must be "
              "[B, T, C], got ", x.sizes());
  return forward_tokens(x, {}, nullptr);  // reports the output
}

at::Tensor SeriesInformedActivationImpl::forward_tokens(const at::Tensor& x,
                                                        const at::Tensor& valid,
                                                        at::Tensor* state) {
  at::Tensor s = ops::siaf(x, a, b, options.activation());
  if (!has_neighbour()) return record_output(*this, s);
  TORCH_CHECK(x.dim() == 3, "SeriesInformedActivation: x must be [B, T, C], got ", x.sizes());
  const int64_t k = options.neighbour_kernel();
  const int64_t batch = x.size(0), steps = x.size(1), channels = x.size(2);
  if (valid.defined()) {
    TORCH_CHECK(valid.dim() == 2 && valid.size(0) == batch && valid.size(1) == steps,
                "SeriesInformedActivation: valid must be [B, T] = [", batch, ", ", steps, "], got ",
                valid.sizes());
    s = s * valid.to(s.scalar_type()).unsqueeze(-1);
  }
  at::Tensor past;
  if (state != nullptr && state->defined()) {
    TORCH_CHECK(state->dim() == 3 && state->size(0) == batch && state->size(1) == k - 1 &&
                    state->size(2) == channels,
                "SeriesInformedActivation: state must be [B, k-1, C] = [", batch, ", ", k - 1,
                ", ", channels, "], got ", state->sizes());
    past = *state;
  } else {
    past = at::zeros({batch, k - 1, channels}, s.options());
  }
  const at::Tensor padded = at::cat({past.to(s.scalar_type()), s}, 1);  // [B, k-1+T, C]
  // y_t = sum_j w_j * s_{t-j}: k shifted slices, no loop over tokens.
  at::Tensor y = padded.narrow(1, k - 1, steps) * neighbour[0];
  for (int64_t j = 1; j < k; ++j) y = y + padded.narrow(1, k - 1 - j, steps) * neighbour[j];
  // Not detached: a model trained through its cache (rlhf/shared_prefix.h runs a prompt once for
  // two continuations) needs the gradient of the continuation's loss on the cached tokens.
  if (state != nullptr) *state = padded.narrow(1, steps, k - 1).contiguous();
  return record_output(*this, y);
}

void SeriesInformedActivationImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::SeriesInformedActivation(channels=" << options.channels()
         << ", terms=" << options.terms()
         << ", activation=" << ops::activation_name(options.activation());
  if (has_neighbour()) stream << ", neighbour_kernel=" << options.neighbour_kernel();
  stream << ")";
}

}  // namespace concord::nn
