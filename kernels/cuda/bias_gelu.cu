// Fused bias + GELU (exact erf form) on CUDA, the elementwise pass between the two GEMMs of the
// augmented shortcut (PanGu-π arXiv 2312.17276, Eq. 4; see bias_gelu.cuh for the contract).
//
//   forward:  pre = u + bias (written back into u), g = GELU(pre) = pre * Phi(pre)
//   backward: du = dg * (Phi(u) + u * phi(u)), g = GELU(u), dbias += sum_r du
//
// Layouts: [rows, N] row-major, bias [N]; fp32/fp16/bf16 storage, fp32 math. Outputs are
// overwritten except dbias_acc (fp32, accumulated with atomics: the caller zeroes it).
//
// Grid: blockIdx.x covers 256 * VEC columns, blockIdx.y strides over rows, so a thread keeps
// its VEC bias values (forward) or its VEC dbias partial sums (backward) in registers across
// every row it visits and issues one atomicAdd per column at the end. VEC packs 16 bytes per
// access (4 fp32 or 8 fp16/bf16) when N is a multiple of it and the pointers are 16-byte
// aligned; otherwise VEC = 1. Every access is coalesced: a warp reads 32 consecutive packs.
// Validated against the CPU kernels (kernels/cpu/bias_gelu.cpp) and the composite by
// tests/ops/test_augmented_shortcut.cpp, AugmentedShortcut.MatchesCpu_CUDA.
#include "bias_gelu.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "concord/core/error.h"

namespace concord::kernels::cuda {
namespace {

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

template <class T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <class T, int VEC>
__device__ __forceinline__ Pack<T, VEC> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, VEC>*>(p);
}
template <class T, int VEC>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, VEC>& v) {
  *reinterpret_cast<Pack<T, VEC>*>(p) = v;
}

constexpr int kThreads = 256;

template <class T, int VEC>
__global__ void bias_gelu_forward_kernel(T* __restrict__ u, const T* __restrict__ bias,
                                         T* __restrict__ g, int64_t rows, int64_t N) {
  const int64_t c0 = (blockIdx.x * (int64_t)kThreads + threadIdx.x) * VEC;
  if (c0 >= N) return;
  float bv[VEC];
  const Pack<T, VEC> bp = load_pack<T, VEC>(bias + c0);
#pragma unroll
  for (int i = 0; i < VEC; ++i) bv[i] = to_f(bp.v[i]);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T* ur = u + r * N + c0;
    Pack<T, VEC> up = load_pack<T, VEC>(ur), gp;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float pre = to_f(up.v[i]) + bv[i];
      const float gelu = pre * normcdff(pre);
      if (g != nullptr) {
        up.v[i] = from_f<T>(pre);
        gp.v[i] = from_f<T>(gelu);
      } else {
        up.v[i] = from_f<T>(gelu);
      }
    }
    store_pack<T, VEC>(ur, up);
    if (g != nullptr) store_pack<T, VEC>(g + r * N + c0, gp);
  }
}

template <class T, int VEC>
__global__ void bias_gelu_backward_kernel(const T* __restrict__ u, const T* dg, T* du,
                                          T* __restrict__ g, float* __restrict__ dbias_acc,
                                          int64_t rows, int64_t N) {
  // dg and du may alias (in-place backward), so neither is __restrict__.
  const int64_t c0 = (blockIdx.x * (int64_t)kThreads + threadIdx.x) * VEC;
  if (c0 >= N) return;
  float acc[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) acc[i] = 0.0f;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t off = r * N + c0;
    const Pack<T, VEC> up = load_pack<T, VEC>(u + off), dp = load_pack<T, VEC>(dg + off);
    Pack<T, VEC> dup, gp;
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      const float x = to_f(up.v[i]);
      const float cdf = normcdff(x);
      const float pdf = 0.3989422804014327f * __expf(-0.5f * x * x);
      const float d = to_f(dp.v[i]) * (cdf + x * pdf);
      dup.v[i] = from_f<T>(d);
      gp.v[i] = from_f<T>(x * cdf);
      acc[i] += d;
    }
    store_pack<T, VEC>(du + off, dup);
    if (g != nullptr) store_pack<T, VEC>(g + off, gp);
  }
#pragma unroll
  for (int i = 0; i < VEC; ++i) atomicAdd(dbias_acc + c0 + i, acc[i]);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) fail(what, ": CUDA launch failed: ", cudaGetErrorString(err));
}

int sm_count() {
  int device = 0, count = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();
    return 80;
  }
  return count;
}

// Columns split into blocks of kThreads * VEC; rows into enough blocks to put ~8 blocks on each
// SM, while each thread still walks >= 8 rows (the backward's atomics are one per thread per
// column, so fewer row blocks means fewer of them).
dim3 grid_for(int64_t rows, int64_t N, int vec) {
  const int64_t col_blocks = (N / vec + kThreads - 1) / kThreads;
  const int64_t want = std::max<int64_t>(1, int64_t(sm_count()) * 8 / col_blocks);
  const int64_t row_blocks = std::max<int64_t>(1, std::min<int64_t>({want, (rows + 7) / 8, 65535}));
  return dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(row_blocks));
}

template <class T>
constexpr int vec_of() {
  return static_cast<int>(16 / sizeof(T));
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T>
void forward_typed(void* u, const void* bias, void* g, int64_t rows, int64_t N,
                   cudaStream_t stream) {
  constexpr int V = vec_of<T>();
  if (N % V == 0 && aligned16(u) && aligned16(bias) && aligned16(g)) {
    bias_gelu_forward_kernel<T, V><<<grid_for(rows, N, V), kThreads, 0, stream>>>(
        static_cast<T*>(u), static_cast<const T*>(bias), static_cast<T*>(g), rows, N);
  } else {
    bias_gelu_forward_kernel<T, 1><<<grid_for(rows, N, 1), kThreads, 0, stream>>>(
        static_cast<T*>(u), static_cast<const T*>(bias), static_cast<T*>(g), rows, N);
  }
  check_launch("bias_gelu_forward_cuda");
}

template <class T>
void backward_typed(const void* u, const void* dg, void* du, void* g, float* dbias, int64_t rows,
                    int64_t N, cudaStream_t stream) {
  constexpr int V = vec_of<T>();
  if (N % V == 0 && aligned16(u) && aligned16(dg) && aligned16(du) && aligned16(g) &&
      aligned16(dbias)) {
    bias_gelu_backward_kernel<T, V><<<grid_for(rows, N, V), kThreads, 0, stream>>>(
        static_cast<const T*>(u), static_cast<const T*>(dg), static_cast<T*>(du),
        static_cast<T*>(g), dbias, rows, N);
  } else {
    bias_gelu_backward_kernel<T, 1><<<grid_for(rows, N, 1), kThreads, 0, stream>>>(
        static_cast<const T*>(u), static_cast<const T*>(dg), static_cast<T*>(du),
        static_cast<T*>(g), dbias, rows, N);
  }
  check_launch("bias_gelu_backward_cuda");
}

}  // namespace

void bias_gelu_forward_cuda(void* u, const void* bias, void* g, int64_t rows, int64_t N,
                            BiasGeluDType dtype, cudaStream_t stream) {
  if (rows == 0 || N == 0) return;
  switch (dtype) {
    case BiasGeluDType::kF32: return forward_typed<float>(u, bias, g, rows, N, stream);
    case BiasGeluDType::kF16: return forward_typed<__half>(u, bias, g, rows, N, stream);
    case BiasGeluDType::kBF16: return forward_typed<__nv_bfloat16>(u, bias, g, rows, N, stream);
  }
  fail("bias_gelu_forward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

void bias_gelu_backward_cuda(const void* u, const void* dg, void* du, void* g, float* dbias_acc,
                             int64_t rows, int64_t N, BiasGeluDType dtype, cudaStream_t stream) {
  if (rows == 0 || N == 0) return;
  switch (dtype) {
    case BiasGeluDType::kF32:
      return backward_typed<float>(u, dg, du, g, dbias_acc, rows, N, stream);
    case BiasGeluDType::kF16:
      return backward_typed<__half>(u, dg, du, g, dbias_acc, rows, N, stream);
    case BiasGeluDType::kBF16:
      return backward_typed<__nv_bfloat16>(u, dg, du, g, dbias_acc, rows, N, stream);
  }
  fail("bias_gelu_backward_cuda: invalid dtype code ", static_cast<int>(dtype));
}

}  // namespace concord::kernels::cuda
