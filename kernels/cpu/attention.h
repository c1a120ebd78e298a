// Fused CPU kernels of scaled dot-product attention, flash-style (Dao et al., FlashAttention,
// arXiv 2205.14135, Algorithm 1 forward; FlashAttention-2, arXiv 2307.08691, Algorithm 2
// backward), with grouped-query heads (Ainslie et al., GQA, arXiv 2305.13245):
//
//   O[b, h, t] = sum_j softmax_j(s_tj) V[b, g(h), j],   s_tj = scale * <Q[b, h, t], K[b, g(h), j]>
//   lse[b, h, t] = log sum_j exp(s_tj)                   (over the allowed keys j only)
//
// g(h) = h / (Hq / Hkv) is the kv head that query head h reads. Query row t sits at position
// p = Tk - Tq + t (a KV cache: the queries are the last Tq positions), and key j is allowed when
//   (not causal or j <= p) and (no segment ids or p == j or seg[p] == seg[j] != 0),
// the second clause being data/collate.h's block_causal_mask (0 marks padding, which sees
// itself only).
//
// Layouts: q, k, v, dout are [B, H, T, D] given as a base pointer and element strides of the
// batch, head and row dims (the last dim contiguous), so transposed [B, T, H, D] views and
// narrowed KV caches need no copy. out, dq, dk, dv are contiguous [B, H, T, D]; lse is
// contiguous [B, Hq, Tq]; segment_ids is contiguous int64 [B, Tk]. Every output is
// overwritten, never accumulated.
//
// The forward keeps a [64 x D] output tile, the running row max and the running row sum in
// cache while it streams 64-key blocks of K and V (online softmax), so memory is O(T), never
// O(T^2). One token (Tq == 1, decode) switches to a schedule that puts the Hq/Hkv query heads of
// a group in one tile and splits the keys across tasks (split-K), then merges the partial
// (max, sum, output) triples. The backward recomputes P blockwise from q, k and lse: tasks own a
// kv head and a set of key blocks, sum dk/dv over the query heads of the group in registers and
// cache, and add dq into per-task-set buffers that are summed in a fixed order, so results do
// not depend on thread scheduling.
//
// fp32 runs on 8-lane vectors (AVX2+FMA when the CPU has it, picked at run time); fp64 runs the
// same code on 4-lane vectors with libm's exp (for gradient checks). Any D works.
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

/// Element strides of the batch, head and row dims of a [B, H, T, D] operand (D contiguous).
struct AttentionStrides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;
};

struct AttentionDims {
  int64_t batch = 0;
  int64_t q_heads = 0;   ///< Hq; a multiple of kv_heads
  int64_t kv_heads = 0;  ///< Hkv
  int64_t q_len = 0;     ///< Tq <= Tk when causal or with segment ids
  int64_t kv_len = 0;    ///< Tk >= 1
  int64_t head_dim = 0;  ///< D >= 1
  bool causal = false;
  double scale = 1.0;
  const int64_t* segment_ids = nullptr;  ///< [B, Tk] or nullptr
};

void attention_forward(const float* q, AttentionStrides qs, const float* k, AttentionStrides ks,
                       const float* v, AttentionStrides vs, float* out, float* lse,
                       const AttentionDims& dims);
void attention_forward(const double* q, AttentionStrides qs, const double* k,
                       AttentionStrides ks, const double* v, AttentionStrides vs, double* out,
                       double* lse, const AttentionDims& dims);

/// dq, dk, dv from dout, the saved out and lse, and q, k, v (P is recomputed blockwise).
/// dk and dv of a kv head are summed over the Hq/Hkv query heads that share it.
void attention_backward(const float* dout, AttentionStrides dos, const float* q,
                        AttentionStrides qs, const float* k, AttentionStrides ks, const float* v,
                        AttentionStrides vs, const float* out, const float* lse, float* dq,
                        float* dk, float* dv, const AttentionDims& dims);
void attention_backward(const double* dout, AttentionStrides dos, const double* q,
                        AttentionStrides qs, const double* k, AttentionStrides ks,
                        const double* v, AttentionStrides vs, const double* out,
                        const double* lse, double* dq, double* dk, double* dv,
                        const AttentionDims& dims);

/// True when the fp32 kernels run the AVX2+FMA build (for benchmarks' reports).
bool attention_uses_avx2();

}  // namespace concord::kernels::cpu
