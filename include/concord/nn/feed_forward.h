// The position-wise feed-forward network of a transformer block, in the two forms Concord's
// models use, optionally with PanGu-π's series informed activation (arXiv 2312.17276, Eq. 7):
//
//   MLP (GPT-2):                 y = W_out act(W_in x + b_in) + b_out
//   SwiGLU (Shazeer, arXiv 2002.05202, Eq. 6; Llama, Mistral, Qwen2, PanGu-π):
//                                y = W_down (act(W_gate x) * W_up x)
//
// With SIAF on, act is SeriesInformedActivation over the intermediate channels (for SwiGLU: the
// gate), which starts out equal to its base activation (see concord/nn/siaf.h). Gate and up
// projections are one fused [2I, d] matrix: one GEMM instead of two.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "concord/nn/linear.h"
#include "concord/nn/siaf.h"

namespace concord::nn {

/// The plain (non-series) activations a feed-forward layer can use.
enum class FeedForwardActivation {
  GeluTanh,  ///< GELU, tanh approximation (transformers' "gelu_new", "gelu_pytorch_tanh")
  Gelu,      ///< GELU, exact erf form ("gelu")
  Relu,      ///< "relu"
  Silu,      ///< "silu" / "swish"
};

/// Parses transformers' `hidden_act` / `activation_function` names; throws concord::Error
/// listing the valid ones.
FeedForwardActivation feed_forward_activation_from_name(const std::string& name);
const char* feed_forward_activation_name(FeedForwardActivation act);

struct FeedForwardOptions {
  FeedForwardOptions(int64_t dim, int64_t hidden) : dim_(dim), hidden_(hidden) {}
  /// d: model width.
  TORCH_ARG(int64_t, dim);
  /// I: intermediate width.
  TORCH_ARG(int64_t, hidden);
  /// Gated (SwiGLU-style) or plain two-layer MLP.
  TORCH_ARG(bool, gated) = true;
  /// Activation when SIAF is off.
  TORCH_ARG(FeedForwardActivation, activation) = FeedForwardActivation::Silu;
  /// Biases on every projection.
  TORCH_ARG(bool, bias) = false;
  /// SIAF terms n; 0 turns SIAF off.
  TORCH_ARG(int64_t, siaf_terms) = 0;
  /// SIAF base activation.
  TORCH_ARG(ops::Activation, siaf_activation) = ops::Activation::SiLU;
  /// SIAF causal neighbour kernel k (0/1: off).
  TORCH_ARG(int64_t, siaf_neighbour_kernel) = 0;
};

class FeedForwardImpl : public torch::nn::Cloneable<FeedForwardImpl> {
 public:
  explicit FeedForwardImpl(FeedForwardOptions options);
  void reset() override;
  /// x: [..., d] -> [..., d].
  at::Tensor forward(const at::Tensor& x);
  /// x: [B, T, d]; `valid` and `state` as in SeriesInformedActivation::forward_tokens (used
  /// only by a SIAF neighbour convolution).
  at::Tensor forward_tokens(const at::Tensor& x, const at::Tensor& valid, at::Tensor* state);
  void pretty_print(std::ostream& stream) const override;

  FeedForwardOptions options;
  Linear fc_in{nullptr};   ///< d -> 2I (gated: [gate; up]) or d -> I
  Linear fc_out{nullptr};  ///< I -> d
  SeriesInformedActivation siaf{nullptr};

 private:
  at::Tensor activate(const at::Tensor& h, const at::Tensor& valid, at::Tensor* state);
};
TORCH_MODULE(FeedForward);

}  // namespace concord::nn
