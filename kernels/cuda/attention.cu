// Flash-style scaled dot-product attention on CUDA, grouped-query heads, causal or full,
// KV-cache offset and segment ids (equations and masking rule: include/concord/ops/attention.h).
//
// Layouts: q, k, v, dout [B, H, T, D] by base pointer + batch/head/row element strides (D
// contiguous); out contiguous [B, Hq, Tq, D]; lse fp32 [B, Hq, Tq]; storage fp32/fp16/bf16,
// arithmetic fp32. out and lse are overwritten; dq_acc, dk_acc, dv_acc are fp32 accumulators
// (+=) that the caller zeroes.
//
// Forward (FlashAttention Alg. 1 with FlashAttention-2's loop order): a block is 4 warps x 4
// query rows. Its rows are (query head of the group, query) pairs flattened, so the Hq/Hkv query
// heads that share a kv head share every K/V tile (for decode, Tq == 1, a block is the group's
// heads). Tiles of 32 keys are staged in shared memory as fp32; lane j scores key j against the
// warp's 4 rows, the warp reduces max and sum with shuffles (online softmax), and each lane
// accumulates D/32 output columns of each row from P broadcast by shuffles. When the grid would
// not fill the device, the keys are split across blocks (split-K) and a second kernel merges the
// partial (O, max, sum) triples.
// Backward (FlashAttention-2 Alg. 2): a block owns 32 keys of one kv head; its 4 warps walk the
// query rows of every query head of the group that can see those keys, recompute
// P = exp(s - lse) (lane j: key j), add dV = P^T dO and dK = dS^T Q into shared-memory
// accumulators (shared atomics: the warps share the keys), and add dQ = dS K to global fp32 with
// atomics (FlashAttention-2 does the same). delta = rowsum(dO * O) comes from a first kernel.
// Shared memory: 4 tiles of 32 x (D+1) floats backward; when the device cannot give it (or
// D > 256), the launcher returns false and the op falls back to the composite.
// The CPU reference these kernels are validated against is kernels/cpu/attention.cpp and the
// composite in src/ops/attention.cpp: tests/ops/test_attention.cpp, Attention.*_CUDA.
#include "attention.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "concord/core/error.h"

namespace concord::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kTileK = 32;  // keys per tile: one per lane
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void put(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

struct Problem {
  int64_t B, Hq, Hkv, Tq, Tk, D, G, offset;
  bool causal;
  float scale;
  const int64_t* seg;  // [B, Tk] or nullptr
};

// Is key `key` visible from the query at position p (segment row `seg` of this batch)?
__device__ __forceinline__ bool allowed(const Problem& P, const int64_t* seg, int64_t p,
                                        int64_t key) {
  if (key >= P.Tk || (P.causal && key > p)) return false;
  if (seg != nullptr && key != p) {
    const int64_t sp = seg[p];
    if (sp == 0 || seg[key] != sp) return false;
  }
  return true;
}

// Grid: x = row blocks of the flattened (g, t) rows, y = key splits, z = B * Hkv.
// Shared: Ks [kTileK][D+1], Vs [kTileK][D], Qs [kRowsPerBlock][D] (pre-scaled).
template <class T, int NC>
__global__ void __launch_bounds__(kWarps* kWarp)
    forward_kernel(const T* __restrict__ q, AttentionCudaStrides qs, const T* __restrict__ k,
                   AttentionCudaStrides ks, const T* __restrict__ v, AttentionCudaStrides vs,
                   T* __restrict__ out, float* __restrict__ lse, float* __restrict__ ws_o,
                   float* __restrict__ ws_m, float* __restrict__ ws_l, Problem P) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(P.D), ldk = D + 1;
  float* Ks = smem;
  float* Vs = Ks + kTileK * ldk;
  float* Qs = Vs + kTileK * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bk = blockIdx.z, b = bk / P.Hkv, kvh = bk % P.Hkv;
  const int64_t rows_total = P.G * P.Tq, r0 = int64_t(blockIdx.x) * kRowsPerBlock;
  const int64_t* seg = P.seg ? P.seg + b * P.Tk : nullptr;

  for (int idx = threadIdx.x; idx < kRowsPerBlock * D; idx += blockDim.x) {
    const int64_t r = r0 + idx / D;
    float val = 0.0f;
    if (r < rows_total) {
      const int64_t hq = kvh * P.G + r / P.Tq, t = r % P.Tq;
      val = to_f(q[b * qs.batch + hq * qs.head + t * qs.row + idx % D]) * P.scale;
    }
    Qs[idx] = val;
  }
  // Positions of this block's rows: the causal edge of the block is the largest.
  int64_t pmax = -1;
  for (int i = 0; i < kRowsPerBlock; ++i) {
    if (r0 + i < rows_total) pmax = max(pmax, P.offset + (r0 + i) % P.Tq);
  }
  int64_t pos[kRowsPerWarp];
  bool live[kRowsPerWarp];
  float m[kRowsPerWarp], l[kRowsPerWarp], o[kRowsPerWarp][NC];
#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    const int64_t r = r0 + warp * kRowsPerWarp + i;
    live[i] = r < rows_total;
    pos[i] = live[i] ? P.offset + r % P.Tq : -1;
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) o[i][c] = 0.0f;
  }
  const int64_t ntiles = (P.Tk + kTileK - 1) / kTileK, splits = gridDim.y;
  const int64_t kbeg = (ntiles * blockIdx.y / splits) * kTileK;
  int64_t kend = min(P.Tk, (ntiles * (blockIdx.y + 1) / splits) * kTileK);
  if (P.causal) kend = min(kend, pmax + 1);
  const T* kb = k + b * ks.batch + kvh * ks.head;
  const T* vb = v + b * vs.batch + kvh * vs.head;

  for (int64_t j0 = kbeg; j0 < kend; j0 += kTileK) {
    __syncthreads();  // the previous tile is consumed (and Qs is written, first time round)
    for (int idx = threadIdx.x; idx < kTileK * D; idx += blockDim.x) {
      const int j = idx / D, dd = idx % D;
      const bool in = j0 + j < P.Tk;
      Ks[j * ldk + dd] = in ? to_f(kb[(j0 + j) * ks.row + dd]) : 0.0f;
      Vs[j * D + dd] = in ? to_f(vb[(j0 + j) * vs.row + dd]) : 0.0f;
    }
    __syncthreads();
    const int64_t key = j0 + lane;
    float s[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) s[i] = 0.0f;
    const float* qw = Qs + warp * kRowsPerWarp * D;
    for (int dd = 0; dd < D; ++dd) {
      const float kv = Ks[lane * ldk + dd];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) s[i] += qw[i * D + dd] * kv;
    }
    float p[kRowsPerWarp];
#pragma unroll
    for (int i = 0; i < kRowsPerWarp; ++i) {
      const bool ok = live[i] && allowed(P, seg, pos[i], key);
      const float sv = ok ? s[i] : -INFINITY;
      const float mnew = fmaxf(m[i], warp_max(sv));
      p[i] = ok ? __expf(sv - mnew) : 0.0f;
      const float alpha = m[i] == -INFINITY ? 0.0f : __expf(m[i] - mnew);
      l[i] = l[i] * alpha + warp_sum(p[i]);
      m[i] = mnew;
#pragma unroll
      for (int c = 0; c < NC; ++c) o[i][c] *= alpha;
    }
    for (int jj = 0; jj < kTileK; ++jj) {
      float pj[kRowsPerWarp];
#pragma unroll
      for (int i = 0; i < kRowsPerWarp; ++i) pj[i] = __shfl_sync(kFull, p[i], jj);
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int dd = lane + kWarp * c;
        const float vv = dd < D ? Vs[jj * D + dd] : 0.0f;
#pragma unroll
        for (int i = 0; i < kRowsPerWarp; ++i) o[i][c] += pj[i] * vv;
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kRowsPerWarp; ++i) {
    if (!live[i]) continue;
    const int64_t r = r0 + warp * kRowsPerWarp + i;
    const int64_t row = (b * P.Hq + kvh * P.G + r / P.Tq) * P.Tq + r % P.Tq;
    if (splits == 1) {
      const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int dd = lane + kWarp * c;
        if (dd < D) put(out + row * D + dd, o[i][c] * inv);
      }
      if (lane == 0) lse[row] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    } else {
      const int64_t rows_all = P.B * P.Hq * P.Tq, w = blockIdx.y * rows_all + row;
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int dd = lane + kWarp * c;
        if (dd < D) ws_o[w * D + dd] = o[i][c];
      }
      if (lane == 0) {
        ws_m[w] = m[i];
        ws_l[w] = l[i];
      }
    }
  }
}

// One warp per output row: merge the split-K partials to a common max.
template <class T>
__global__ void merge_kernel(const float* __restrict__ ws_o, const float* __restrict__ ws_m,
                             const float* __restrict__ ws_l, T* __restrict__ out,
                             float* __restrict__ lse, int64_t rows, int D, int splits) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float M = -INFINITY;
  for (int s = 0; s < splits; ++s) M = fmaxf(M, ws_m[s * rows + row]);
  float L = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = ws_m[s * rows + row];
    if (ms != -INFINITY) L += __expf(ms - M) * ws_l[s * rows + row];
  }
  const float inv = L > 0.0f ? 1.0f / L : 0.0f;
  for (int dd = lane; dd < D; dd += kWarp) {
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = ws_m[s * rows + row];
      if (ms != -INFINITY) acc += __expf(ms - M) * ws_o[(s * rows + row) * D + dd];
    }
    put(out + row * D + dd, acc * inv);
  }
  if (lane == 0) lse[row] = L > 0.0f ? M + logf(L) : -INFINITY;
}

// delta[row] = sum_d dout * out, one warp per row.
template <class T>
__global__ void delta_kernel(const T* __restrict__ dout, AttentionCudaStrides dos,
                             const T* __restrict__ out, float* __restrict__ delta, int64_t Hq,
                             int64_t Tq, int64_t rows, int D) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const int64_t t = row % Tq, bh = row / Tq, h = bh % Hq, b = bh / Hq;
  const T* dor = dout + b * dos.batch + h * dos.head + t * dos.row;
  float acc = 0.0f;
  for (int dd = lane; dd < D; dd += kWarp) acc += to_f(dor[dd]) * to_f(out[row * D + dd]);
  acc = warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// Grid: x = key tiles, y = B * Hkv. Shared: Ks, Vs, dKs, dVs [kTileK][D+1]; Qw, Dw [kWarps][D].
template <class T, int NC>
__global__ void __launch_bounds__(kWarps* kWarp)
    backward_kernel(const T* __restrict__ dout, AttentionCudaStrides dos, const T* __restrict__ q,
                    AttentionCudaStrides qs, const T* __restrict__ k, AttentionCudaStrides ks,
                    const T* __restrict__ v, AttentionCudaStrides vs,
                    const float* __restrict__ lse, const float* __restrict__ delta,
                    float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv,
                    Problem P) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(P.D), ldk = D + 1;
  float* Ks = smem;
  float* Vs = Ks + kTileK * ldk;
  float* dKs = Vs + kTileK * ldk;
  float* dVs = dKs + kTileK * ldk;
  float* Qw = dVs + kTileK * ldk;
  float* Dw = Qw + kWarps * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bk = blockIdx.y, b = bk / P.Hkv, kvh = bk % P.Hkv;
  const int64_t j0 = int64_t(blockIdx.x) * kTileK, key = j0 + lane;
  const int64_t* seg = P.seg ? P.seg + b * P.Tk : nullptr;
  const T* kb = k + b * ks.batch + kvh * ks.head;
  const T* vb = v + b * vs.batch + kvh * vs.head;
  for (int idx = threadIdx.x; idx < kTileK * D; idx += blockDim.x) {
    const int j = idx / D, dd = idx % D;
    const bool in = j0 + j < P.Tk;
    Ks[j * ldk + dd] = in ? to_f(kb[(j0 + j) * ks.row + dd]) : 0.0f;
    Vs[j * ldk + dd] = in ? to_f(vb[(j0 + j) * vs.row + dd]) : 0.0f;
    dKs[j * ldk + dd] = 0.0f;
    dVs[j * ldk + dd] = 0.0f;
  }
  __syncthreads();
  // Queries before position j0 see none of these keys when causal.
  const int64_t t_first = P.causal ? max(int64_t(0), j0 - P.offset) : 0;
  const int64_t per_head = P.Tq - t_first, rows = P.G * per_head;
  float* qw = Qw + warp * D;
  float* dw = Dw + warp * D;
  for (int64_t idx = warp; idx < rows; idx += kWarps) {
    const int64_t hq = kvh * P.G + idx / per_head, t = t_first + idx % per_head;
    const int64_t row = (b * P.Hq + hq) * P.Tq + t, p = P.offset + t;
    __syncwarp();
    for (int dd = lane; dd < D; dd += kWarp) {
      qw[dd] = to_f(q[b * qs.batch + hq * qs.head + t * qs.row + dd]);
      dw[dd] = to_f(dout[b * dos.batch + hq * dos.head + t * dos.row + dd]);
    }
    __syncwarp();
    float s = 0.0f, dp = 0.0f;
    for (int dd = 0; dd < D; ++dd) {
      s += qw[dd] * Ks[lane * ldk + dd];
      dp += dw[dd] * Vs[lane * ldk + dd];
    }
    const float L = lse[row];
    const bool ok = L != -INFINITY && allowed(P, seg, p, key);
    const float pr = ok ? __expf(s * P.scale - L) : 0.0f;
    const float ds = pr * (dp - delta[row]);
    if (pr != 0.0f || ds != 0.0f) {
      for (int dd = 0; dd < D; ++dd) {
        atomicAdd(dVs + lane * ldk + dd, pr * dw[dd]);
        atomicAdd(dKs + lane * ldk + dd, ds * qw[dd]);
      }
    }
    float acc[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
    for (int jj = 0; jj < kTileK; ++jj) {
      const float dsj = __shfl_sync(kFull, ds, jj);
#pragma unroll
      for (int c = 0; c < NC; ++c) {
        const int dd = lane + kWarp * c;
        if (dd < D) acc[c] += dsj * Ks[jj * ldk + dd];
      }
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int dd = lane + kWarp * c;
      if (dd < D) atomicAdd(dq + row * D + dd, acc[c] * P.scale);
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTileK * D; idx += blockDim.x) {
    const int j = idx / D, dd = idx % D;
    if (j0 + j < P.Tk) {
      const int64_t at = ((b * P.Hkv + kvh) * P.Tk + j0 + j) * D + dd;
      dk[at] += dKs[j * ldk + dd] * P.scale;
      dv[at] += dVs[j * ldk + dd];
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

void check_call(cudaError_t err, const char* what) {
  if (err != cudaSuccess) fail(what, ": ", cudaGetErrorString(err));
}

struct DeviceInfo {
  int sms = 80;
  int smem_optin = 48 * 1024;
};
DeviceInfo device_info() {
  DeviceInfo info;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&info.sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&info.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                             device) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so check_launch reports the launch's own
  }
  return info;
}

// Lets `kernel` use `bytes` of dynamic shared memory; false when the device cannot.
template <class Kernel>
bool reserve_smem(Kernel kernel, size_t bytes, const DeviceInfo& info) {
  if (bytes > static_cast<size_t>(info.smem_optin)) return false;
  if (bytes > 48 * 1024 &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes)) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return true;
}

Problem make_problem(const AttentionCudaDims& d) {
  return Problem{d.batch,     d.q_heads,         d.kv_heads, d.q_len,   d.kv_len, d.head_dim,
                 d.q_heads / d.kv_heads, d.kv_len - d.q_len, d.causal, d.scale,  d.segment_ids};
}

template <class T, int NC>
bool forward_typed(const void* q, AttentionCudaStrides qs, const void* k, AttentionCudaStrides ks,
                   const void* v, AttentionCudaStrides vs, void* out, float* lse,
                   const Problem& P, cudaStream_t stream) {
  const DeviceInfo info = device_info();
  const int D = static_cast<int>(P.D);
  const size_t smem = sizeof(float) * (kTileK * (D + 1) + kTileK * D + kRowsPerBlock * D);
  auto kernel = forward_kernel<T, NC>;
  if (!reserve_smem(kernel, smem, info)) return false;
  const int64_t row_blocks = (P.G * P.Tq + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t groups = P.B * P.Hkv;
  if (row_blocks > 2147483647 || groups > 65535) return false;
  // Split the keys when the grid would leave SMs idle, but keep >= 256 keys per split.
  const int64_t blocks = row_blocks * groups, ntiles = (P.Tk + kTileK - 1) / kTileK;
  int64_t splits = 1;
  if (blocks < 2 * info.sms) {
    splits = std::min<int64_t>((2 * info.sms + blocks - 1) / blocks, std::max<int64_t>(1, P.Tk / 256));
    splits = std::max<int64_t>(1, std::min<int64_t>({splits, ntiles, 65535}));
  }
  const int64_t rows_all = P.B * P.Hq * P.Tq;
  float* ws = nullptr;
  if (splits > 1) {
    const size_t bytes = sizeof(float) * splits * rows_all * (D + 2);
    check_call(cudaMallocAsync(reinterpret_cast<void**>(&ws), bytes, stream),
               "attention_forward_cuda: workspace");
  }
  float* ws_o = ws;
  float* ws_m = ws ? ws + splits * rows_all * D : nullptr;
  float* ws_l = ws ? ws_m + splits * rows_all : nullptr;
  dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits),
            static_cast<unsigned>(groups));
  kernel<<<grid, kWarps * kWarp, smem, stream>>>(
      static_cast<const T*>(q), qs, static_cast<const T*>(k), ks, static_cast<const T*>(v), vs,
      static_cast<T*>(out), lse, ws_o, ws_m, ws_l, P);
  check_launch("attention_forward_cuda");
  if (splits > 1) {
    const int64_t merge_blocks = (rows_all + kWarps - 1) / kWarps;
    merge_kernel<T><<<static_cast<unsigned>(merge_blocks), kWarps * kWarp, 0, stream>>>(
        ws_o, ws_m, ws_l, static_cast<T*>(out), lse, rows_all, D, static_cast<int>(splits));
    check_launch("attention_forward_cuda (merge)");
    check_call(cudaFreeAsync(ws, stream), "attention_forward_cuda: workspace");
  }
  return true;
}

template <class T, int NC>
bool backward_typed(const void* dout, AttentionCudaStrides dos, const void* q,
                    AttentionCudaStrides qs, const void* k, AttentionCudaStrides ks,
                    const void* v, AttentionCudaStrides vs, const void* out, const float* lse,
                    float* dq, float* dk, float* dv, const Problem& P, cudaStream_t stream) {
  const DeviceInfo info = device_info();
  const int D = static_cast<int>(P.D);
  const size_t smem = sizeof(float) * (4 * kTileK * (D + 1) + 2 * kWarps * D);
  auto kernel = backward_kernel<T, NC>;
  if (!reserve_smem(kernel, smem, info)) return false;
  const int64_t groups = P.B * P.Hkv, ntiles = (P.Tk + kTileK - 1) / kTileK;
  if (groups > 65535 || ntiles > 2147483647) return false;
  const int64_t rows = P.B * P.Hq * P.Tq;
  float* delta = nullptr;
  check_call(cudaMallocAsync(reinterpret_cast<void**>(&delta), sizeof(float) * rows, stream),
             "attention_backward_cuda: workspace");
  delta_kernel<T><<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * kWarp, 0,
                    stream>>>(static_cast<const T*>(dout), dos, static_cast<const T*>(out), delta,
                              P.Hq, P.Tq, rows, D);
  check_launch("attention_backward_cuda (delta)");
  dim3 grid(static_cast<unsigned>(ntiles), static_cast<unsigned>(groups));
  kernel<<<grid, kWarps * kWarp, smem, stream>>>(
      static_cast<const T*>(dout), dos, static_cast<const T*>(q), qs, static_cast<const T*>(k),
      ks, static_cast<const T*>(v), vs, lse, delta, dq, dk, dv, P);
  check_launch("attention_backward_cuda");
  check_call(cudaFreeAsync(delta, stream), "attention_backward_cuda: workspace");
  return true;
}

// D/32 output columns per lane, rounded up to 1, 2, 4 or 8 (D <= 256).
int columns_per_lane(int64_t D) { return D <= 32 ? 1 : D <= 64 ? 2 : D <= 128 ? 4 : 8; }

template <class T>
bool forward_dispatch(const void* q, AttentionCudaStrides qs, const void* k,
                      AttentionCudaStrides ks, const void* v, AttentionCudaStrides vs, void* out,
                      float* lse, const Problem& P, cudaStream_t stream) {
  switch (columns_per_lane(P.D)) {
    case 1: return forward_typed<T, 1>(q, qs, k, ks, v, vs, out, lse, P, stream);
    case 2: return forward_typed<T, 2>(q, qs, k, ks, v, vs, out, lse, P, stream);
    case 4: return forward_typed<T, 4>(q, qs, k, ks, v, vs, out, lse, P, stream);
    default: return forward_typed<T, 8>(q, qs, k, ks, v, vs, out, lse, P, stream);
  }
}

template <class T>
bool backward_dispatch(const void* dout, AttentionCudaStrides dos, const void* q,
                       AttentionCudaStrides qs, const void* k, AttentionCudaStrides ks,
                       const void* v, AttentionCudaStrides vs, const void* out,
                       const float* lse, float* dq, float* dk, float* dv, const Problem& P,
                       cudaStream_t stream) {
  switch (columns_per_lane(P.D)) {
    case 1:
      return backward_typed<T, 1>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, P, stream);
    case 2:
      return backward_typed<T, 2>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, P, stream);
    case 4:
      return backward_typed<T, 4>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, P, stream);
    default:
      return backward_typed<T, 8>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq, dk, dv, P, stream);
  }
}

bool supported(const AttentionCudaDims& d) {
  return d.head_dim >= 1 && d.head_dim <= attention_cuda_max_head_dim() && d.kv_heads >= 1 &&
         d.q_heads % d.kv_heads == 0 && d.kv_len >= 1;
}

}  // namespace

bool attention_forward_cuda(const void* q, AttentionCudaStrides qs, const void* k,
                            AttentionCudaStrides ks, const void* v, AttentionCudaStrides vs,
                            void* out, float* lse, const AttentionCudaDims& dims,
                            AttentionDType dtype, cudaStream_t stream) {
  if (!supported(dims)) return false;
  if (dims.batch == 0 || dims.q_heads == 0 || dims.q_len == 0) return true;
  const Problem P = make_problem(dims);
  switch (dtype) {
    case AttentionDType::kF32:
      return forward_dispatch<float>(q, qs, k, ks, v, vs, out, lse, P, stream);
    case AttentionDType::kF16:
      return forward_dispatch<__half>(q, qs, k, ks, v, vs, out, lse, P, stream);
    case AttentionDType::kBF16:
      return forward_dispatch<__nv_bfloat16>(q, qs, k, ks, v, vs, out, lse, P, stream);
  }
  fail("attention_forward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

bool attention_backward_cuda(const void* dout, AttentionCudaStrides dos, const void* q,
                             AttentionCudaStrides qs, const void* k, AttentionCudaStrides ks,
                             const void* v, AttentionCudaStrides vs, const void* out,
                             const float* lse, float* dq_acc, float* dk_acc, float* dv_acc,
                             const AttentionCudaDims& dims, AttentionDType dtype,
                             cudaStream_t stream) {
  if (!supported(dims)) return false;
  if (dims.batch == 0 || dims.q_heads == 0 || dims.q_len == 0) return true;
  const Problem P = make_problem(dims);
  switch (dtype) {
    case AttentionDType::kF32:
      return backward_dispatch<float>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq_acc, dk_acc,
                                      dv_acc, P, stream);
    case AttentionDType::kF16:
      return backward_dispatch<__half>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq_acc, dk_acc,
                                       dv_acc, P, stream);
    case AttentionDType::kBF16:
      return backward_dispatch<__nv_bfloat16>(dout, dos, q, qs, k, ks, v, vs, out, lse, dq_acc,
                                              dk_acc, dv_acc, P, stream);
  }
  fail("attention_backward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

}  // namespace concord::kernels::cuda
