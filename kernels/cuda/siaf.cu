// SIAF (series informed activation, PanGu-π arXiv 2312.17276, Eq. 7) on CUDA.
//
//   y[r, c]  = sum_{i<n} a[i, c] * sigma(u_i),          u_i = x[r, c] + b[i, c]
//   dx[r, c] = dy[r, c] * sum_{i<n} a[i, c] * sigma'(u_i)
//   da[i, c] += sum_r dy[r, c] * sigma(u_i)
//   db[i, c] += sum_r dy[r, c] * a[i, c] * sigma'(u_i)
//
// Layouts: x, y, dy, dx [rows, C] row-major contiguous; a, b [n, C]; storage fp32, fp16 or bf16,
// arithmetic and accumulation in fp32. y and dx are overwritten; da/db are fp32 accumulators
// (+=) that the caller zeroes.
//
// Forward: a thread owns a pack of 16 bytes of channels (4 fp32 or 8 fp16/bf16; one element when
// C is not a multiple of that) and walks a stride of rows, so x and y move in 16-byte accesses
// and no thread divides by C; a and b are read through the read-only cache (they are tiny and
// shared by every row).
// Backward: a block is 32 channels x 8 row lanes; each thread walks rows with a stride of
// 8 * gridDim.y, writes dx, and keeps its n partial sums of da/db in registers (n <= 8). The 8
// lanes are then reduced in shared memory and one atomicAdd per (block, i, c) lands in da/db.
// Warps cover 32 consecutive channels, so every global access is coalesced.
// The CPU reference these kernels are validated against is kernels/cpu/siaf.cpp (and the
// composite ATen expression in src/ops/siaf.cpp): tests/ops/test_siaf.cpp, Siaf.MatchesCpu_CUDA.
#include "siaf.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "concord/core/error.h"

namespace concord::kernels::cuda {
namespace {

__device__ __forceinline__ float load(const float* p) { return __ldg(p); }
__device__ __forceinline__ float load(const __half* p) { return __half2float(__ldg(p)); }
__device__ __forceinline__ float load(const __nv_bfloat16* p) {
  return __bfloat162float(__ldg(p));
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// value and derivative of the base activation; ACT: 0 SiLU, 1 GELU (erf), 2 ReLU.
template <int ACT>
__device__ __forceinline__ void act_value_grad(float u, float& v, float& g) {
  if (ACT == 0) {
    const float s = 1.0f / (1.0f + __expf(-u));
    v = u * s;
    g = s * (1.0f + u * (1.0f - s));
  } else if (ACT == 1) {
    const float cdf = normcdff(u);
    v = u * cdf;
    g = cdf + u * (0.3989422804014327f * __expf(-0.5f * u * u));
  } else {
    v = u < 0.0f ? 0.0f : u;
    g = u > 0.0f ? 1.0f : 0.0f;
  }
}

template <int ACT>
__device__ __forceinline__ float act_value(float u) {
  if (ACT == 0) return u / (1.0f + __expf(-u));
  if (ACT == 1) return u * normcdff(u);
  return u < 0.0f ? 0.0f : u;
}

// Packs of VEC consecutive elements, moved as one 16-byte (or narrower) access.
template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_f(float& d, float v) { d = v; }
__device__ __forceinline__ void from_f(__half& d, float v) { d = __float2half_rn(v); }
__device__ __forceinline__ void from_f(__nv_bfloat16& d, float v) { d = __float2bfloat16_rn(v); }

constexpr int kForwardThreads = 256;

// blockIdx.x covers kForwardThreads * VEC channels, blockIdx.y strides over rows: a thread owns
// VEC consecutive channels and walks rows r = blockIdx.y, blockIdx.y + gridDim.y, ... (a and b of
// its channels stay in L1 across the rows). No per-element division by C.
template <int ACT, class T, int VEC>
__global__ void siaf_forward_kernel(const T* __restrict__ x, const T* __restrict__ a,
                                    const T* __restrict__ b, T* __restrict__ y, int64_t rows,
                                    int64_t C, int n) {
  const int64_t c0 = (blockIdx.x * (int64_t)kForwardThreads + threadIdx.x) * VEC;
  if (c0 >= C) return;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const Pack<T, VEC> xp = *reinterpret_cast<const Pack<T, VEC>*>(x + r * C + c0);
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = 0.0f;
    for (int i = 0; i < n; ++i) {
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const int64_t j = i * C + c0 + k;
        acc[k] += load(a + j) * act_value<ACT>(to_f(xp.v[k]) + load(b + j));
      }
    }
    Pack<T, VEC> yp;
#pragma unroll
    for (int k = 0; k < VEC; ++k) from_f(yp.v[k], acc[k]);
    *reinterpret_cast<Pack<T, VEC>*>(y + r * C + c0) = yp;
  }
}

constexpr int kMaxTerms = static_cast<int>(siaf_cuda_max_terms());
constexpr int kLanesX = 32;  // channels per block
constexpr int kLanesY = 8;   // row lanes per block

template <int ACT, class T>
__global__ void siaf_backward_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                                     const T* __restrict__ a, const T* __restrict__ b,
                                     T* __restrict__ dx, float* __restrict__ da_acc,
                                     float* __restrict__ db_acc, int64_t rows, int64_t C,
                                     int n) {
  __shared__ float red[kLanesY][kLanesX];
  const int64_t c = blockIdx.x * (int64_t)kLanesX + threadIdx.x;
  const bool live = c < C;
  float ai[kMaxTerms], bi[kMaxTerms], s[kMaxTerms], p[kMaxTerms];
#pragma unroll
  for (int i = 0; i < kMaxTerms; ++i) {
    ai[i] = (live && i < n) ? load(a + i * C + c) : 0.0f;
    bi[i] = (live && i < n) ? load(b + i * C + c) : 0.0f;
    s[i] = 0.0f;
    p[i] = 0.0f;
  }
  if (live) {
    for (int64_t r = blockIdx.y * (int64_t)kLanesY + threadIdx.y; r < rows;
         r += (int64_t)gridDim.y * kLanesY) {
      const int64_t idx = r * C + c;
      const float xv = load(x + idx), g_out = load(dy + idx);
      float gsum = 0.0f;
#pragma unroll
      for (int i = 0; i < kMaxTerms; ++i) {
        if (i < n) {
          float v, g;
          act_value_grad<ACT>(xv + bi[i], v, g);
          gsum += ai[i] * g;
          s[i] += g_out * v;
          p[i] += g_out * g;
        }
      }
      store(dx + idx, g_out * gsum);
    }
  }
  // Reduce the kLanesY row lanes of each channel, one term at a time.
  for (int i = 0; i < n; ++i) {
    for (int which = 0; which < 2; ++which) {
      red[threadIdx.y][threadIdx.x] = which == 0 ? s[i] : p[i];
      __syncthreads();
      if (threadIdx.y == 0 && live) {
        float total = 0.0f;
#pragma unroll
        for (int l = 0; l < kLanesY; ++l) total += red[l][threadIdx.x];
        if (which == 0) {
          atomicAdd(da_acc + i * C + c, total);
        } else {
          atomicAdd(db_acc + i * C + c, ai[i] * total);
        }
      }
      __syncthreads();
    }
  }
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

int sm_count() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so check_launch reports the launch's own
    return 80;
  }
  return count;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <int ACT, class T, int VEC>
void forward_launch_vec(const void* x, const void* a, const void* b, void* y, int64_t rows,
                        int64_t C, int n, cudaStream_t stream) {
  const int64_t col_blocks = (C / VEC + kForwardThreads - 1) / kForwardThreads;
  // ~8 blocks per SM in all, each thread still walking several rows.
  const int64_t want = std::max<int64_t>(1, int64_t(sm_count()) * 8 / col_blocks);
  const int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>({want, rows, 65535}));
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
  siaf_forward_kernel<ACT, T, VEC><<<grid, kForwardThreads, 0, stream>>>(
      static_cast<const T*>(x), static_cast<const T*>(a), static_cast<const T*>(b),
      static_cast<T*>(y), rows, C, n);
}

template <int ACT, class T>
void forward_launch(const void* x, const void* a, const void* b, void* y, int64_t rows,
                    int64_t C, int n, cudaStream_t stream) {
  constexpr int V = static_cast<int>(16 / sizeof(T));  // 4 fp32 or 8 fp16/bf16 per access
  if (C % V == 0 && aligned16(x) && aligned16(y)) {
    forward_launch_vec<ACT, T, V>(x, a, b, y, rows, C, n, stream);
  } else {
    forward_launch_vec<ACT, T, 1>(x, a, b, y, rows, C, n, stream);
  }
  check_launch("siaf_forward_cuda");
}

template <int ACT, class T>
void backward_launch(const void* dy, const void* x, const void* a, const void* b, void* dx,
                     float* da, float* db, int64_t rows, int64_t C, int n, cudaStream_t stream) {
  const int64_t col_blocks = (C + kLanesX - 1) / kLanesX;
  // Enough row blocks to fill the device ~4 times over, but each thread keeps >= 4 rows so the
  // atomics stay a small fraction of the traffic.
  const int64_t target = std::max<int64_t>(1, int64_t(sm_count()) * 4 / col_blocks);
  const int64_t row_blocks = std::max<int64_t>(
      1, std::min<int64_t>({target, (rows + 4 * kLanesY - 1) / (4 * kLanesY), 65535}));
  dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
  dim3 block(kLanesX, kLanesY);
  siaf_backward_kernel<ACT, T><<<grid, block, 0, stream>>>(
      static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(a),
      static_cast<const T*>(b), static_cast<T*>(dx), da, db, rows, C, n);
  check_launch("siaf_backward_cuda");
}

template <class T>
void forward_typed(const void* x, const void* a, const void* b, void* y, int64_t rows, int64_t C,
                   int n, SiafAct act, cudaStream_t stream) {
  switch (act) {
    case 0: return forward_launch<0, T>(x, a, b, y, rows, C, n, stream);
    case 1: return forward_launch<1, T>(x, a, b, y, rows, C, n, stream);
    case 2: return forward_launch<2, T>(x, a, b, y, rows, C, n, stream);
  }
  fail("siaf_forward_cuda: invalid activation code ", act);
}

template <class T>
void backward_typed(const void* dy, const void* x, const void* a, const void* b, void* dx,
                    float* da, float* db, int64_t rows, int64_t C, int n, SiafAct act,
                    cudaStream_t stream) {
  switch (act) {
    case 0: return backward_launch<0, T>(dy, x, a, b, dx, da, db, rows, C, n, stream);
    case 1: return backward_launch<1, T>(dy, x, a, b, dx, da, db, rows, C, n, stream);
    case 2: return backward_launch<2, T>(dy, x, a, b, dx, da, db, rows, C, n, stream);
  }
  fail("siaf_backward_cuda: invalid activation code ", act);
}

void check_terms(const char* what, int64_t n) {
  if (n < 1 || n > siaf_cuda_max_terms()) {
    fail(what, ": n_terms must be in [1, ", siaf_cuda_max_terms(), "], got ", n);
  }
}

}  // namespace

void siaf_forward_cuda(const void* x, const void* a, const void* b, void* y, int64_t rows,
                       int64_t channels, int64_t n_terms, SiafAct act, SiafDType dtype,
                       cudaStream_t stream) {
  if (rows == 0 || channels == 0) return;
  const int n = static_cast<int>(n_terms);
  if (n_terms < 1) fail("siaf_forward_cuda: n_terms must be >= 1, got ", n_terms);
  switch (dtype) {
    case SiafDType::kF32: return forward_typed<float>(x, a, b, y, rows, channels, n, act, stream);
    case SiafDType::kF16: return forward_typed<__half>(x, a, b, y, rows, channels, n, act, stream);
    case SiafDType::kBF16:
      return forward_typed<__nv_bfloat16>(x, a, b, y, rows, channels, n, act, stream);
  }
  fail("siaf_forward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

void siaf_backward_cuda(const void* dy, const void* x, const void* a, const void* b, void* dx,
                        float* da_acc, float* db_acc, int64_t rows, int64_t channels,
                        int64_t n_terms, SiafAct act, SiafDType dtype, cudaStream_t stream) {
  if (rows == 0 || channels == 0) return;
  check_terms("siaf_backward_cuda", n_terms);
  const int n = static_cast<int>(n_terms);
  switch (dtype) {
    case SiafDType::kF32:
      return backward_typed<float>(dy, x, a, b, dx, da_acc, db_acc, rows, channels, n, act,
                                   stream);
    case SiafDType::kF16:
      return backward_typed<__half>(dy, x, a, b, dx, da_acc, db_acc, rows, channels, n, act,
                                    stream);
    case SiafDType::kBF16:
      return backward_typed<__nv_bfloat16>(dy, x, a, b, dx, da_acc, db_acc, rows, channels, n,
                                           act, stream);
  }
  fail("siaf_backward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

}  // namespace concord::kernels::cuda
