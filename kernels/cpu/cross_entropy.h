// Softmax cross-entropy over class-major logits, for the fused LM-head loss
// (ops/linear_cross_entropy.h).
//
// Layout: lt is [V, N] row-major with row stride ld >= N: row v holds class v's logit for each
// of N tokens. That is the transposed logits, W h^T, which the LM head's GEMM produces faster
// than h W^T: MKL runs [50257, 768] x [768, 1024] at 179 GFLOP/s on this project's 2-core
// machine against 136 for [1024, 768] x [768, 50257] (benchmarks/bench_head_layout.py).
// Tokens are contiguous, so the kernels vectorise across tokens.
//
// The classes are cut into blocks of kXentBlockRows rows. A task takes one block and up to 64
// token columns: a max pass over the tile, then an exp pass that reads the tile back from L2
// (128 KB), so the logits cross memory once each way. Each block keeps its own column maxima;
// the blocks are merged per token in double, in block order, so results do not depend on the
// thread count.
//
// fp32 only, vectorised (baseline SSE2, AVX2 or AVX-512 build, see cpu_isa.h); exp is
// vmath::exp (~2 ulp).
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

/// Classes per block.
constexpr int64_t kXentBlockRows = 512;
/// Number of class blocks for V classes (the rows of xent_forward's block_max).
inline int64_t xent_blocks(int64_t V) { return (V + kXentBlockRows - 1) / kXentBlockRows; }

/// In place: lt[v, n] <- exp(lt[v, n] - block_max[b(v), n]) where b(v) = v / kXentBlockRows and
/// block_max [xent_blocks(V), N] receives each block's column maxima (an all -inf block column
/// keeps -inf and gets ~0 values); lse [N] receives log sum_v exp(l[v, n]).
void xent_forward(float* lt, int64_t V, int64_t N, int64_t ld, float* block_max, float* lse);

/// In place, after xent_forward on the same lt:
///   lt[v, n] <- lt[v, n] * exp(block_max[b(v), n] - lse[n]) * scale[n] - [v == target[n]] scale[n]
/// the gradient of sum_n scale[n] (lse[n] - l[target[n], n]) with respect to the logits. Columns
/// with scale[n] == 0 become 0 and their target is not read; other targets must be in [0, V).
void xent_backward(float* lt, int64_t V, int64_t N, int64_t ld, const float* block_max,
                   const float* lse, const float* scale, const int64_t* target);

}  // namespace concord::kernels::cpu
