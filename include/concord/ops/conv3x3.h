// The 3x3 convolution with stride 1 and padding 1 of SDXL's U-Net and VAE (ResnetBlock2D's conv1
// and conv2, conv_in, conv_out, the upsamplers' conv):
//
//   y[n, k] = b[k] + sum_c w[k, c] (*) x[n, c]          (cross-correlation, zero padding 1)
//
// `conv3x3` is differentiable. On CPU in fp32, with the fused switch on (fused.h) and at shapes
// where it pays (`conv3x3_uses_winograd`), its forward runs Winograd F(4x4, 3x3) (Lavin and
// Gray, arXiv 1509.09308): the filters and the input tiles are transformed, the 36 points become
// 36 matrix products over channels (4x fewer multiplies than a direct or im2col convolution)
// and the result is transformed back, bias added. Backward: the input gradient, a 3x3
// convolution of dy with the flipped and transposed filters, runs the Winograd forward where
// that shape pays; the weight gradient runs Winograd too (the same transforms run backwards:
// dw = G^T [sum over tiles (A dy A^T) . (B^T x B)] G); the bias gradient is dy summed. Winograd
// differs from ATen's convolution by rounding (1e-5 to 1e-4 on outputs of order 1 in fp32,
// growing with the channels). Elsewhere it runs `conv3x3_reference`.
#pragma once

#include <ATen/ATen.h>

namespace concord::ops {

/// Differentiable conv2d(x, weight, bias, stride 1, padding 1) of x [N, C, H, W] with weight
/// [K, C, 3, 3] and bias [K] (or undefined): Winograd where it pays.
at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias = {});

/// The composite ATen reference: at::conv2d(x, weight, bias, 1, 1).
at::Tensor conv3x3_reference(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias = {});

/// Winograd F(4x4, 3x3) forward without autograd, whatever the shape (CPU fp32 only): for
/// benchmarks and tests that compare it with the reference.
at::Tensor conv3x3_winograd_forward(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias = {});

/// The weight gradient of conv3x3(x, w) for the output gradient dy [N, K, H, W] by Winograd
/// F(4x4, 3x3), whatever the shape (CPU fp32 only): dw [K, C, 3, 3]. What `conv3x3`'s backward
/// runs where its forward runs Winograd; public for benchmarks and tests.
at::Tensor conv3x3_winograd_weight_grad(const at::Tensor& x, const at::Tensor& dy);

/// When `conv3x3` runs its Winograd forward (always only on CPU fp32, the fused switch of
/// fused.h on):
enum class Conv3x3Winograd {
  kAuto,    ///< where it pays: enough 4x4 tiles and channels (the default; see the source)
  kAlways,  ///< at every shape: for tests that hold the Winograd path to a reference model
  kNever,   ///< never: ATen's convolution everywhere (bench_unet --direct-conv, bisecting)
};
/// Sets the mode for every thread of the process.
void set_conv3x3_winograd(Conv3x3Winograd mode);
Conv3x3Winograd conv3x3_winograd();

/// Sets the mode for a scope and restores the previous one when it ends.
class Conv3x3WinogradGuard {
 public:
  explicit Conv3x3WinogradGuard(Conv3x3Winograd mode) : previous_(conv3x3_winograd()) {
    set_conv3x3_winograd(mode);
  }
  ~Conv3x3WinogradGuard() { set_conv3x3_winograd(previous_); }
  Conv3x3WinogradGuard(const Conv3x3WinogradGuard&) = delete;
  Conv3x3WinogradGuard& operator=(const Conv3x3WinogradGuard&) = delete;

 private:
  Conv3x3Winograd previous_;
};

/// True when `conv3x3` on these tensors runs the Winograd forward under the current mode.
bool conv3x3_uses_winograd(const at::Tensor& x, const at::Tensor& weight);

}  // namespace concord::ops
