// CUDA kernels of the series informed activation (SIAF), PanGu-π (arXiv 2312.17276), Eq. 7:
//   y[r, c] = sum_{i < n} a[i, c] * sigma(x[r, c] + b[i, c])
// Host-callable launchers on raw device pointers and a stream; no torch types, so this header is
// included both by siaf.cu (nvcc) and by src/ops (the dispatch, host compiler).
//
// Layouts: x, y, dy, dx are [rows, C] contiguous; a, b are [n, C] contiguous, same dtype as x.
// dtype: fp32, fp16 or bf16 storage, fp32 arithmetic and accumulation.
// Outputs y and dx are overwritten. da_acc and db_acc are fp32 [n, C] buffers that the backward
// ACCUMULATES into (+=, with atomics across row blocks): zero them first. On return
//   da_acc[i, c] += sum_r dy * sigma(u),   db_acc[i, c] += sum_r dy * a[i, c] * sigma'(u).
// n must be at most siaf_cuda_max_terms() (the backward keeps the n partial sums in registers).
// Launchers throw concord::Error with cudaGetErrorString's text when a launch fails.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace concord::kernels::cuda {

enum class SiafDType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

/// 0 = SiLU, 1 = GELU (erf), 2 = ReLU: the values of concord::ops::Activation.
using SiafAct = int32_t;

constexpr int64_t siaf_cuda_max_terms() { return 8; }

void siaf_forward_cuda(const void* x, const void* a, const void* b, void* y, int64_t rows,
                       int64_t channels, int64_t n_terms, SiafAct act, SiafDType dtype,
                       cudaStream_t stream);

void siaf_backward_cuda(const void* dy, const void* x, const void* a, const void* b, void* dx,
                        float* da_acc, float* db_acc, int64_t rows, int64_t channels,
                        int64_t n_terms, SiafAct act, SiafDType dtype, cudaStream_t stream);

}  // namespace concord::kernels::cuda
