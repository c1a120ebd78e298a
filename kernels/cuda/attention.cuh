// CUDA kernels of flash-style scaled dot-product attention with grouped-query heads (see
// include/concord/ops/attention.h for the equations and the masking rule). Host-callable
// launchers on raw device pointers and a stream; no torch types, so this header is included both
// by attention.cu (nvcc) and by src/ops/attention.cpp (the dispatch, host compiler).
//
// Layouts: q, k, v, dout are [B, H, T, D] given by a base pointer and the element strides of the
// batch, head and row dims (D contiguous); out is contiguous [B, Hq, Tq, D]; lse is fp32
// contiguous [B, Hq, Tq]; segment_ids (optional) is a device int64 [B, Tk].
// Storage fp32, fp16 or bf16 (one dtype for q, k, v, dout, out); arithmetic and accumulation fp32.
// out and lse are overwritten. The backward ACCUMULATES (+=) into the fp32 buffers dq_acc
// ([B, Hq, Tq, D], atomics across key blocks), dk_acc and dv_acc ([B, Hkv, Tk, D], one writer
// per element): zero them first; dq_acc receives dq already multiplied by the scale.
//
// Each launcher returns false, without launching, when the kernel cannot run this problem
// (head dim above attention_cuda_max_head_dim(), or not enough shared memory on the device), so
// the caller can fall back to the composite; it throws concord::Error with cudaGetErrorString's
// text when a launch fails.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace concord::kernels::cuda {

enum class AttentionDType : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct AttentionCudaStrides {
  int64_t batch = 0;
  int64_t head = 0;
  int64_t row = 0;
};

struct AttentionCudaDims {
  int64_t batch = 0;
  int64_t q_heads = 0;
  int64_t kv_heads = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t head_dim = 0;
  bool causal = false;
  float scale = 1.0f;
  const int64_t* segment_ids = nullptr;  ///< device pointer or nullptr
};

constexpr int64_t attention_cuda_max_head_dim() { return 256; }

/// Forward (Tq == 1 runs the split-K decode kernel). Returns false when it cannot run.
bool attention_forward_cuda(const void* q, AttentionCudaStrides qs, const void* k,
                            AttentionCudaStrides ks, const void* v, AttentionCudaStrides vs,
                            void* out, float* lse, const AttentionCudaDims& dims,
                            AttentionDType dtype, cudaStream_t stream);

/// Backward into zeroed fp32 accumulators. Returns false when it cannot run.
bool attention_backward_cuda(const void* dout, AttentionCudaStrides dos, const void* q,
                             AttentionCudaStrides qs, const void* k, AttentionCudaStrides ks,
                             const void* v, AttentionCudaStrides vs, const void* out,
                             const float* lse, float* dq_acc, float* dk_acc, float* dv_acc,
                             const AttentionCudaDims& dims, AttentionDType dtype,
                             cudaStream_t stream);

}  // namespace concord::kernels::cuda
