// SeriesInformedActivation: the series informed activation function (SIAF) of PanGu-π
// (Wang et al., arXiv 2312.17276, Eq. 7):
//
//   sigma_s(x) = sum_{i=1..n} a_i * sigma(x + b_i)
//
// with learnable per-channel scales a_i and shifts b_i ([n, C] each) over a base activation
// sigma (SiLU inside a SwiGLU gate, GELU, ReLU). Eq. 7 itself writes the series as
// sum_i sigma_i(a_i x + b_i), the scale inside the activation; the form above, scale outside and
// shift inside, is that of VanillaNet's series activation (arXiv 2305.12972, cited below). Computed by concord::ops::siaf (fused CPU/CUDA
// kernels with autograd, see concord/ops/siaf.h).
//
// Initialisation: a_1 = 1, b_1 = 0 and a_i = 0 for i > 1, so a fresh SIAF is exactly the base
// activation (a pretrained FFN keeps its function when SIAF is switched on). The extra shifts
// are spread, b_i = (i - 1) * 0.5 * (-1)^i (+0.5, -1.0, +1.5, ...), so the terms are distinct
// functions of x: dL/da_i = sum(dL/dy * sigma(x + b_i)) is non-zero from the first step, and
// once a_i moves off zero b_i receives gradient too.
//
// Optional neighbour information (VanillaNet, Chen et al., arXiv 2305.12972, Eq. 6, made 1-D and
// causal over tokens): with neighbour_kernel k > 1 the series output s goes through a causal
// depthwise 1-D convolution, y_t = sum_{j=0..k-1} w_{j} * s_{t-j} (per channel), initialised to
// the identity (w_0 = 1, the rest 0). Incremental decoding keeps the last k-1 values of s in a
// state tensor ([B, k-1, C]) that forward() reads and updates.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>
#include <string>

#include "concord/ops/siaf.h"

namespace concord::nn {

struct SeriesInformedActivationOptions {
  /* implicit */ SeriesInformedActivationOptions(int64_t channels)  // NOLINT
      : channels_(channels) {}
  /// C: size of the activated (last) dimension; a and b are per channel.
  TORCH_ARG(int64_t, channels);
  /// n: number of series terms (the paper's models use 2).
  TORCH_ARG(int64_t, terms) = 2;
  /// Base activation sigma.
  TORCH_ARG(ops::Activation, activation) = ops::Activation::SiLU;
  /// k: causal depthwise neighbour convolution over tokens; 0 or 1 turns it off (the default).
  TORCH_ARG(int64_t, neighbour_kernel) = 0;
};

class SeriesInformedActivationImpl : public torch::nn::Cloneable<SeriesInformedActivationImpl> {
 public:
  explicit SeriesInformedActivationImpl(SeriesInformedActivationOptions options);
  void reset() override;
  /// Resets a, b (and the neighbour weights) to the initialisation described above.
  void reset_parameters();

  /// x: [..., C] -> same shape. Without the neighbour convolution, any leading dims.
  at::Tensor forward(const at::Tensor& x);
  /// x: [B, T, C]. `valid` ([B, T] bool or 0/1, optional) zeroes the series output at padding
  /// positions before the neighbour convolution, so left padding does not leak into real tokens.
  /// `state` (optional, [B, k-1, C]): the previous tokens' series outputs; read when defined
  /// (else zeros: nothing before the first token) and replaced by the last k-1 values.
  at::Tensor forward_tokens(const at::Tensor& x, const at::Tensor& valid, at::Tensor* state);

  bool has_neighbour() const { return options.neighbour_kernel() > 1; }
  void pretty_print(std::ostream& stream) const override;

  SeriesInformedActivationOptions options;
  at::Tensor a;          ///< [n, C]
  at::Tensor b;          ///< [n, C]
  at::Tensor neighbour;  ///< [k, C] (w_j multiplies s_{t-j}); undefined when off
};
TORCH_MODULE(SeriesInformedActivation);

}  // namespace concord::nn
