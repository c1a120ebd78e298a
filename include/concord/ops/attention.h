// Fused scaled dot-product attention, the attention of PanGu-π's (arXiv 2312.17276) MSA blocks:
//
//   O = softmax(scale * Q K^T + M) V,   scale = 1/sqrt(D) by default   (Vaswani et al. 2017, Eq. 1)
//
// computed flash-style (FlashAttention, arXiv 2205.14135, Alg. 1; FlashAttention-2, arXiv
// 2307.08691, Alg. 2): keys stream through in blocks with an online softmax, so memory grows with
// T and never with T^2. The forward saves O and the per-row logsumexp L; the backward recomputes
// P = exp(scale Q K^T - L) blockwise.
//
// Layouts: q is [B, Hq, Tq, D], k and v are [B, Hkv, Tk, D] with Hq % Hkv == 0 (grouped-query
// attention, arXiv 2305.13245: query heads h*G .. h*G+G-1, G = Hq/Hkv, share kv head h; Hkv == 1
// is multi-query, Hkv == Hq plain multi-head). The output is [B, Hq, Tq, D]; dk and dv of a kv
// head are summed over its G query heads. Only the last dim must be contiguous: transposed
// [B, T, H, D] views and narrowed KV caches are read in place.
//
// Positions (KV cache): query t sits at position Tk - Tq + t, key j at position j, so with
// Tq < Tk the queries are the newest Tq tokens of a cache and causal masking aligns to the end.
// The mask M allows key j for the query at position p when
//   (not causal or j <= p) and (no segment ids or p == j or seg[p] == seg[j] != 0),
// which with segment ids [B, Tk] is data/collate.h's block_causal_mask for packed sequences
// (0 marks padding, which attends to itself only), without materialising a T^2 mask.
//
// `attention` dispatches: CPU fp32/fp64 -> kernels/cpu/attention.cpp; CUDA fp32/fp16/bf16 with
// D <= 256, when built with CUDA dispatch -> kernels/cuda/attention.cu; anything else ->
// `attention_reference` (the composite matmul-softmax-matmul) under autograd.
#pragma once
#include <cstdint>

#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>

namespace concord::ops {

struct AttentionOptions {
  /// Mask keys after the query's position (positions aligned to the end, see above).
  TORCH_ARG(bool, causal) = false;
  /// Softmax scale; unset means 1/sqrt(D).
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// Optional integer [B, Tk] segment ids (0 = padding): restricts attention to the same
  /// segment, as data::block_causal_mask does for packed rows. Needs Tq <= Tk.
  TORCH_ARG(at::Tensor, segment_ids) = at::Tensor();
};

/// Differentiable attention (w.r.t. q, k and v): fused kernels where available.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options = {});

struct AttentionOutput {
  at::Tensor out;  ///< [B, Hq, Tq, D], q's dtype
  at::Tensor lse;  ///< [B, Hq, Tq] logsumexp of each row's scaled, masked scores (fp32, fp64 for fp64)
};

/// Forward without autograd, returning what the backward needs.
AttentionOutput attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const AttentionOptions& options = {});

struct AttentionGrads {
  at::Tensor dq;  ///< q's shape
  at::Tensor dk;  ///< k's shape, summed over the query heads of each group
  at::Tensor dv;  ///< v's shape, likewise
};

/// Backward given dout and the forward's out and lse, without autograd.
AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                  const at::Tensor& lse, const AttentionOptions& options = {});

/// One new token against a KV cache: q is [B, Hq, 1, D], k_cache/v_cache [B, Hkv, Tk, D] hold
/// every position up to and including the new token's (narrow a preallocated cache to the
/// filled length; the view is read in place). No autograd. The CPU kernel puts the G query
/// heads of a group in one tile and splits the keys across threads when B*Hkv is small.
at::Tensor attention_decode(const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const AttentionOptions& options = {});

/// The composite ATen reference: softmax(scale q k^T + mask) v with kv heads repeated G times,
/// differentiable by autograd. Materialises [B, Hq, Tq, Tk] scores.
at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionOptions& options = {});

/// True when `attention` on tensors like q runs a fused kernel.
bool attention_is_fused(const at::Tensor& q);

}  // namespace concord::ops
