// Builders of the convolution and normalisation layers the U-Net and the VAE share, with
// diffusers' arguments. Private to src/diffusion.
#pragma once
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>

#include "concord/ops/conv3x3.h"

namespace concord::diffusion::detail {

inline torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

inline torch::nn::Conv2d conv3x3(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1));
}

/// A conv3x3 layer's forward through ops::conv3x3 (Winograd on CPU where it pays; the same
/// parameters, gradients and diffusers names as conv->forward).
inline at::Tensor conv3x3_forward(const torch::nn::Conv2d& conv, const at::Tensor& x) {
  return ops::conv3x3(x, conv->weight, conv->bias);
}

inline torch::nn::Conv2d conv1x1(int64_t in, int64_t out) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 1));
}

}  // namespace concord::diffusion::detail
