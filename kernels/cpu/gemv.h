// Matrix-vector product for the decode step of generation: y = W x (+ b), one input row.
//
// Decoding one token multiplies every weight matrix by a vector, so a step reads every weight
// once and the product is bound by memory bandwidth, not arithmetic. BLAS libraries run such a
// product on one thread (MKL's sgemv on a [50257, 768] LM head: 10.7 GB/s at 1 and at 2 threads,
// against 20 GB/s for a plain two-thread read of the same matrix on this machine), so this kernel
// splits the output rows over at::parallel_for and streams eight weight rows at a time against
// the same input vector (eight independent accumulator chains and memory streams, the input
// loaded once for eight; eight measured ~8% faster than four on a GPT-2-sized decode).
//
// Layouts: w is [out, in] row-major contiguous, x is [in], bias is [out] or null, y is [out].
// fp32, vectorised (baseline or AVX2 build, see cpu_isa.h; a bandwidth-bound loop gains nothing
// from AVX-512). Each y[o] is summed in a fixed order, independent of the thread count.
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

void gemv(const float* w, int64_t out, int64_t in, const float* x, const float* bias, float* y);

}  // namespace concord::kernels::cpu
