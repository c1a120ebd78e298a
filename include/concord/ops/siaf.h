// Series informed activation (SIAF), PanGu-π (Wang et al., arXiv 2312.17276), Eq. 7:
//
//   sigma_s(x) = sum_{i=1..n} a_i * sigma(x + b_i)
//
// with learnable per-channel scales a and shifts b (n = 2 in the paper's models) and a base
// activation sigma (SiLU, GELU or ReLU). (Eq. 7 writes sum_i sigma_i(a_i x + b_i); Concord's
// parametrisation, scale outside, is VanillaNet's, arXiv 2305.12972; see concord/nn/siaf.h.) Layouts: x is [..., C] (any leading dims, channels
// last), a and b are [n, C]; the output has x's shape. Gradients of a and b are reduced over
// every leading dim of x.
//
// `siaf` is the differentiable op: on CPU (fp32, fp64, bf16) it runs one fused pass forward and
// one fused pass backward (recomputing sigma from x, so nothing but x, a, b is saved); on CUDA,
// when Concord is built with CUDA dispatch, it runs kernels/cuda/siaf.cu; elsewhere it falls
// back to `siaf_reference`, the composite ATen expression that autograd differentiates.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace concord::ops {

/// Base activation of a SIAF. GELU is the exact erf form (torch.nn.GELU(approximate="none")).
enum class Activation : int32_t { SiLU = 0, GELU = 1, ReLU = 2 };

/// "silu" | "gelu" | "relu" (case-insensitive; "swish" is SiLU). Throws concord::Error naming the
/// valid choices otherwise.
Activation activation_from_name(const std::string& name);
const char* activation_name(Activation act);

/// Differentiable SIAF (Eq. 7): fused kernels where available, the composite elsewhere.
at::Tensor siaf(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                Activation act = Activation::SiLU);

/// Forward without autograd, on the fused kernels. Same checks as `siaf`.
at::Tensor siaf_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                        Activation act = Activation::SiLU);

struct SiafGrads {
  at::Tensor dx;  ///< x's shape
  at::Tensor da;  ///< [n, C], summed over x's leading dims
  at::Tensor db;  ///< [n, C], summed over x's leading dims
};

/// Backward of Eq. 7 given the output gradient dy (x's shape), without autograd.
SiafGrads siaf_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& a,
                        const at::Tensor& b, Activation act = Activation::SiLU);

/// The composite ATen reference: sum_i a[i] * sigma(x + b[i]), differentiable by autograd.
/// Slow (n+2 full-size temporaries forward, more backward) but obviously right.
at::Tensor siaf_reference(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                          Activation act = Activation::SiLU);

/// True when `siaf` on tensors like x runs a fused kernel (CPU fp32/fp64/bf16, or CUDA
/// fp32/fp16/bf16 when built with CUDA dispatch); false when it falls back to the composite.
bool siaf_is_fused(const at::Tensor& x);

}  // namespace concord::ops
