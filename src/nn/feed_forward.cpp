#include "concord/nn/feed_forward.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"
#include "concord/nn/linear.h"

namespace concord::nn {

FeedForwardActivation feed_forward_activation_from_name(const std::string& name) {
  if (name == "gelu_new" || name == "gelu_pytorch_tanh" || name == "gelu_fast") {
    return FeedForwardActivation::GeluTanh;
  }
  if (name == "gelu") return FeedForwardActivation::Gelu;
  if (name == "relu") return FeedForwardActivation::Relu;
  if (name == "silu" || name == "swish") return FeedForwardActivation::Silu;
  fail("unknown activation '", name,
       "': expected one of gelu_new, gelu_pytorch_tanh, gelu, relu, silu");
}

const char* feed_forward_activation_name(FeedForwardActivation act) {
  switch (act) {
    case FeedForwardActivation::GeluTanh: return "gelu_new";
    case FeedForwardActivation::Gelu: return "gelu";
    case FeedForwardActivation::Relu: return "relu";
    case FeedForwardActivation::Silu: return "silu";
  }
  return "?";
}

FeedForwardImpl::FeedForwardImpl(FeedForwardOptions o) : options(std::move(o)) { reset(); }

void FeedForwardImpl::reset() {
  CONCORD_CHECK(options.dim() > 0 && options.hidden() > 0,
                "FeedForward: dim and hidden must be positive, got ", options.dim(), ", ",
                options.hidden());
  const int64_t d = options.dim(), i = options.hidden();
  fc_in = register_module(
      "fc_in", Linear(LinearOptions(d, options.gated() ? 2 * i : i).bias(options.bias())));
  fc_out = register_module("fc_out", Linear(LinearOptions(i, d).bias(options.bias())));
  if (options.siaf_terms() > 0) {
    siaf = register_module("siaf", SeriesInformedActivation(
                                       SeriesInformedActivationOptions(i)
                                           .terms(options.siaf_terms())
                                           .activation(options.siaf_activation())
                                           .neighbour_kernel(options.siaf_neighbour_kernel())));
  }
}

at::Tensor FeedForwardImpl::activate(const at::Tensor& h, const at::Tensor& valid,
                                     at::Tensor* state) {
  if (siaf) {
    return siaf->has_neighbour() ? siaf->forward_tokens(h, valid, state) : siaf->forward(h);
  }
  switch (options.activation()) {
    case FeedForwardActivation::GeluTanh: return at::gelu(h, "tanh");
    case FeedForwardActivation::Gelu: return at::gelu(h);
    case FeedForwardActivation::Relu: return at::relu(h);
    case FeedForwardActivation::Silu: return at::silu(h);
  }
  return h;
}

// forward_tokens reports the output; forward must not report it a second time.
at::Tensor FeedForwardImpl::forward(const at::Tensor& x) { return forward_tokens(x, {}, nullptr); }

at::Tensor FeedForwardImpl::forward_tokens(const at::Tensor& x, const at::Tensor& valid,
                                           at::Tensor* state) {
  TORCH_CHECK(x.size(-1) == options.dim(), "FeedForward: expected last dim ", options.dim(),
              ", got ", x.sizes());
  const at::Tensor h = record_output(*fc_in, linear(x, fc_in->weight, fc_in->bias));
  at::Tensor act;
  if (options.gated()) {
    const int64_t i = options.hidden();
    act = activate(h.narrow(-1, 0, i), valid, state) * h.narrow(-1, i, i);  // act(gate) * up
  } else {
    act = activate(h, valid, state);
  }
  const at::Tensor y = record_output(*fc_out, linear(act, fc_out->weight, fc_out->bias));
  return record_output(*this, y);
}

void FeedForwardImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::FeedForward(dim=" << options.dim() << ", hidden=" << options.hidden()
         << ", " << (options.gated() ? "gated" : "mlp") << ", activation="
         << (options.siaf_terms() > 0 ? "siaf" : feed_forward_activation_name(options.activation()))
         << ")";
}

}  // namespace concord::nn
