// CUDA kernels of the fused bias + GELU epilogue (exact erf GELU) of the augmented shortcut,
// PanGu-π (arXiv 2312.17276) Eq. 4: T_i(Z) = W2_i GELU(W1_i Z + b1_i) + b2_i. The GEMMs around
// them are cuBLAS's (at::mm); these kernels are the elementwise pass between them.
// Host-callable launchers on raw device pointers and a stream; no torch types, so this header is
// included both by bias_gelu.cu (nvcc) and by src/ops (the dispatch, host compiler).
//
// Layouts: u, g, dg, du are [rows, N] row-major contiguous; bias is [N]; storage fp32, fp16 or
// bf16 (all the same), arithmetic and accumulation in fp32.
// bias_gelu_forward_cuda:  u[r, j] += bias[j] in place (u becomes the pre-activation the backward
//                          needs) and g[r, j] = GELU(u[r, j]) (overwritten); with g == nullptr,
//                          u is replaced by GELU(u + bias) (inference).
// bias_gelu_backward_cuda: du[r, j] = dg[r, j] * GELU'(u[r, j]) (overwritten; du may be dg),
//                          g[r, j] = GELU(u[r, j]) recomputed (overwritten; may be nullptr), and
//                          dbias_acc[j] += sum_r du[r, j]: an fp32 [N] accumulator that the
//                          caller zeroes (atomics across row blocks).
// Launchers throw concord::Error with cudaGetErrorString's text when a launch fails.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace concord::kernels::cuda {

enum class BiasGeluDType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

void bias_gelu_forward_cuda(void* u, const void* bias, void* g, int64_t rows, int64_t N,
                            BiasGeluDType dtype, cudaStream_t stream);

void bias_gelu_backward_cuda(const void* u, const void* dg, void* du, void* g, float* dbias_acc,
                             int64_t rows, int64_t N, BiasGeluDType dtype, cudaStream_t stream);

}  // namespace concord::kernels::cuda
