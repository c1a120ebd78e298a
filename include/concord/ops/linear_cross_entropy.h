// Cross-entropy of a linear layer's logits, the language-modelling loss on an LM head, without
// the [N, V] logits, their log-softmax or their gradient ever existing in memory:
//
//   z_n = W h_n                          (logits of token n, W the head's [V, d] weight)
//   l_n = log sum_v exp(z_{n,v}) - z_{n,t_n}
//   loss = sum_{n: t_n != ignore} l_n    (Sum)   or that sum / |{n: t_n != ignore}|   (Mean)
//
// and its gradients dL/dz_n = c_n (softmax(z_n) - onehot(t_n)), c_n the token's weight (1, or
// 1/count for Mean; 0 for ignored tokens), dL/dh = dL/dz W and dL/dW = dL/dz^T h.
//
// The fused path (CPU fp32) works through the tokens in chunks: one GEMM makes a chunk's logits
// in class-major layout, W h^T (the faster of the two layouts for a wide head, see
// kernels/cpu/cross_entropy.h), a kernel turns them into the softmax in place, and when
// gradients are wanted the same buffer becomes dL/dz and two more GEMMs give the chunk's dL/dh
// and add its share of dL/dW. The gradients are therefore computed during the forward call and
// held until backward, which scales them by the incoming gradient (what Liger-Kernel's fused
// linear cross-entropy does for GPUs). Memory: one chunk buffer (at most 2^26 floats, 256 MiB,
// unless the options ask otherwise) plus the gradients themselves, against three [N, V] tensors
// for logits -> log_softmax -> nll on the composite path.
//
// Elsewhere (CUDA, other dtypes, fused ops switched off, ops/fused.h) it is the composite,
// at::cross_entropy_loss(at::linear(h, W)), with half-precision logits cast to fp32 first.
#pragma once
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/core/Reduction.h>

namespace concord::ops {

struct LinearCrossEntropyOptions {
  /// Targets equal to this add no loss and no gradient (PyTorch's default).
  int64_t ignore_index = -100;
  /// at::Reduction::Mean (over the counted tokens) or at::Reduction::Sum.
  at::Reduction::Reduction reduction = at::Reduction::Mean;
  /// Tokens per chunk on the fused path; 0 chooses min(N, max(256, 2^26 / V)).
  int64_t chunk_tokens = 0;
};

/// hidden [..., d], weight [V, d], targets [...] int64 (hidden's leading shape) -> a scalar loss,
/// differentiable in hidden and weight. A target outside [0, V) that is not ignore_index throws
/// concord::Error naming its position. Mean over zero counted tokens is NaN, as in PyTorch.
at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                const at::Tensor& targets,
                                const LinearCrossEntropyOptions& options = {});

/// The composite: at::cross_entropy_loss(at::linear(hidden, weight), targets) under autograd,
/// fp16/bf16 logits cast to fp32 first. Same checks.
at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight,
                                          const at::Tensor& targets,
                                          const LinearCrossEntropyOptions& options = {});

/// True when linear_cross_entropy on these tensors takes the fused path.
bool linear_cross_entropy_is_fused(const at::Tensor& hidden, const at::Tensor& weight);

}  // namespace concord::ops
