// The AdamW update of one parameter (Loshchilov & Hutter, arXiv 1711.05101, Algorithm 2, with
// PyTorch's bias correction), in place. With g the gradient at the k-th update:
//
//   m <- beta1 m + (1 - beta1) g
//   v <- beta2 v + (1 - beta2) g^2
//   p <- p (1 - lr lambda) - (lr / (1 - beta1^k)) m / (sqrt(v) / sqrt(1 - beta2^k) + eps)
//
// train::AdamW keeps the state and the schedule; this is the arithmetic. Contiguous fp32 CPU
// tensors take kernels/cpu/adamw (one vectorised pass over p, g, m and v); anything else, or
// fused ops switched off (ops/fused.h), runs the same update as ATen ops.
#pragma once
#include <ATen/ATen.h>

namespace concord::ops {

struct AdamWStep {
  double decay_factor = 1.0;       ///< 1 - lr * lambda (1 for exempt parameters)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double step_size = 0.0;          ///< lr / (1 - beta1^k)
  double bias_correction2 = 1.0;   ///< 1 - beta2^k
  double eps = 1e-8;
};

/// Updates p, exp_avg and exp_avg_sq in place from grad (all of p's shape).
void adamw_update_(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg,
                   at::Tensor& exp_avg_sq, const AdamWStep& step);

/// True when adamw_update_ on these tensors runs the fused kernel.
bool adamw_update_is_fused(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg,
                           const at::Tensor& exp_avg_sq);

}  // namespace concord::ops
