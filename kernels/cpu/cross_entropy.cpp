// Softmax cross-entropy over class-major logits (see cross_entropy.h).
#include "cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

// Token columns per task: 256 bytes of each row, so the rows' reads stay long enough for the
// prefetchers while a block's tile (512 x 64 floats) fits in L2 for the second pass.
constexpr int64_t kTileCols = 64;
// Fewest elements a thread is woken for.
constexpr int64_t kMinElementsPerTask = int64_t(1) << 16;

// One tile, `rows` rows by `w` (<= kTileCols) columns from t (row stride ld): t <- exp(t - m)
// with m the column maxima (0 in place of -inf, so an all -inf column gives ~0, not NaN);
// m_out and s_out [w] receive the maxima and the sums of the exponentials.
template <class V>
CONCORD_ALWAYS_INLINE void forward_tile(float* t, int64_t ld, int64_t rows, int64_t w,
                                        float* m_out, float* s_out) {
  constexpr int64_t L = vmath::lanes<V>();
  constexpr int64_t kVecs = kTileCols / L;
  const int64_t nv = (w + L - 1) / L;
  const V neg_inf = vmath::splat<V>(-std::numeric_limits<float>::infinity());
  V m[kVecs], s[kVecs];
  for (int64_t j = 0; j < kVecs; ++j) m[j] = neg_inf;
  if (w == kTileCols) {  // whole vectors: fixed trip counts the compiler unrolls
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = t + r * ld;
#pragma GCC unroll 16
      for (int64_t j = 0; j < kVecs; ++j) {
        const V x = vmath::load<V>(row + j * L);
        m[j] = x > m[j] ? x : m[j];
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = t + r * ld;
      for (int64_t j = 0; j < nv; ++j) {
        const V x = vmath::load_n<V>(std::min(L, w - j * L), row + j * L);
        m[j] = x > m[j] ? x : m[j];
      }
    }
  }
  V shift[kVecs];
  for (int64_t j = 0; j < kVecs; ++j) {
    shift[j] = m[j] == neg_inf ? vmath::splat<V>(0.0f) : m[j];
    s[j] = vmath::splat<V>(0.0f);
  }
  if (w == kTileCols) {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = t + r * ld;
#pragma GCC unroll 16
      for (int64_t j = 0; j < kVecs; ++j) {
        const V e = vmath::exp(vmath::load<V>(row + j * L) - shift[j]);
        vmath::store(row + j * L, e);
        s[j] += e;
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = t + r * ld;
      for (int64_t j = 0; j < nv; ++j) {
        const int64_t k = std::min(L, w - j * L);
        const V e = vmath::exp(vmath::load_n<V>(k, row + j * L) - shift[j]);
        vmath::store_n<V>(k, row + j * L, e);
        s[j] += e;
      }
    }
  }
  for (int64_t j = 0; j < nv; ++j) {
    const int64_t k = std::min(L, w - j * L);
    vmath::store_n<V>(k, m_out + j * L, m[j]);
    vmath::store_n<V>(k, s_out + j * L, s[j]);
  }
}

// One tile of the backward: t <- t * f, f [w] the per-column factors (zero tail lanes allowed).
template <class V>
CONCORD_ALWAYS_INLINE void scale_tile(float* t, int64_t ld, int64_t rows, int64_t w,
                                      const float* f) {
  constexpr int64_t L = vmath::lanes<V>();
  constexpr int64_t kVecs = kTileCols / L;
  const int64_t nv = (w + L - 1) / L;
  V fv[kVecs];
  for (int64_t j = 0; j < nv; ++j) fv[j] = vmath::load_n<V>(std::min(L, w - j * L), f + j * L);
  if (w == kTileCols) {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = t + r * ld;
#pragma GCC unroll 16
      for (int64_t j = 0; j < kVecs; ++j) {
        vmath::store(row + j * L, vmath::load<V>(row + j * L) * fv[j]);
      }
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      float* row = t + r * ld;
      for (int64_t j = 0; j < nv; ++j) {
        const int64_t k = std::min(L, w - j * L);
        vmath::store_n<V>(k, row + j * L, vmath::load_n<V>(k, row + j * L) * fv[j]);
      }
    }
  }
}

// The fp32 builds (cpu_isa.h): baseline 4-lane SSE2, AVX2+FMA, AVX-512.
void forward_tile_base(float* t, int64_t ld, int64_t rows, int64_t w, float* m, float* s) {
  forward_tile<vmath::vf4>(t, ld, rows, w, m, s);
}
void scale_tile_base(float* t, int64_t ld, int64_t rows, int64_t w, const float* f) {
  scale_tile<vmath::vf4>(t, ld, rows, w, f);
}
#ifdef CONCORD_CPU_X86_VARIANTS
__attribute__((target("avx2,fma"))) void forward_tile_avx2(float* t, int64_t ld, int64_t rows,
                                                          int64_t w, float* m, float* s) {
  forward_tile<vmath::vf>(t, ld, rows, w, m, s);
}
__attribute__((target("avx2,fma"))) void scale_tile_avx2(float* t, int64_t ld, int64_t rows,
                                                        int64_t w, const float* f) {
  scale_tile<vmath::vf>(t, ld, rows, w, f);
}
__attribute__((target("avx512f,avx2,fma"))) void forward_tile_avx512(float* t, int64_t ld,
                                                                     int64_t rows, int64_t w,
                                                                     float* m, float* s) {
  forward_tile<vmath::vf16>(t, ld, rows, w, m, s);
}
__attribute__((target("avx512f,avx2,fma"))) void scale_tile_avx512(float* t, int64_t ld,
                                                                   int64_t rows, int64_t w,
                                                                   const float* f) {
  scale_tile<vmath::vf16>(t, ld, rows, w, f);
}
#endif

void forward_tile_any(float* t, int64_t ld, int64_t rows, int64_t w, float* m, float* s) {
  CONCORD_CPU_DISPATCH(forward_tile, t, ld, rows, w, m, s);
}
void scale_tile_any(float* t, int64_t ld, int64_t rows, int64_t w, const float* f) {
  CONCORD_CPU_DISPATCH(scale_tile, t, ld, rows, w, f);
}

// The (block, column tile) grid both passes walk.
struct Tiles {
  int64_t V, N, blocks, col_tiles;
  Tiles(int64_t v, int64_t n)
      : V(v), N(n), blocks(xent_blocks(v)), col_tiles((n + kTileCols - 1) / kTileCols) {}
  int64_t count() const { return blocks * col_tiles; }
  int64_t grain() const {
    const int64_t per_task = kXentBlockRows * std::min(N, kTileCols);
    return std::max<int64_t>(1, kMinElementsPerTask / std::max<int64_t>(1, per_task));
  }
  // Tile i: rows [r0, r0 + rows), columns [c0, c0 + w).
  void at(int64_t i, int64_t& b, int64_t& r0, int64_t& rows, int64_t& c0, int64_t& w) const {
    b = i / col_tiles;
    r0 = b * kXentBlockRows;
    rows = std::min(kXentBlockRows, V - r0);
    c0 = (i % col_tiles) * kTileCols;
    w = std::min(kTileCols, N - c0);
  }
};

}  // namespace

void xent_forward(float* lt, int64_t V, int64_t N, int64_t ld, float* block_max, float* lse) {
  if (V <= 0 || N <= 0) return;
  const Tiles tiles(V, N);
  std::vector<float> block_sum(static_cast<size_t>(tiles.blocks * N));
  at::parallel_for(0, tiles.count(), tiles.grain(), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      int64_t b, r0, rows, c0, w;
      tiles.at(i, b, r0, rows, c0, w);
      forward_tile_any(lt + r0 * ld + c0, ld, rows, w, block_max + b * N + c0,
                       block_sum.data() + b * N + c0);
    }
  });
  // log sum_v e^l = M + log sum_b s_b e^{m_b - M}, per token, in double and in block order.
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float M = neg_inf;
      bool nan = false;
      for (int64_t b = 0; b < tiles.blocks; ++b) {
        const float m = block_max[b * N + n];
        nan = nan || std::isnan(m) || std::isnan(block_sum[b * N + n]);
        M = std::max(M, m);
      }
      if (nan) {
        lse[n] = std::numeric_limits<float>::quiet_NaN();
        continue;
      }
      if (M == neg_inf || M == -neg_inf) {  // every logit -inf, or one +inf
        lse[n] = M;
        continue;
      }
      double S = 0;
      for (int64_t b = 0; b < tiles.blocks; ++b) {
        const float m = block_max[b * N + n];
        if (m != neg_inf) S += double(block_sum[b * N + n]) * std::exp(double(m) - double(M));
      }
      lse[n] = static_cast<float>(double(M) + std::log(S));
    }
  });
}

void xent_backward(float* lt, int64_t V, int64_t N, int64_t ld, const float* block_max,
                   const float* lse, const float* scale, const int64_t* target) {
  if (V <= 0 || N <= 0) return;
  const Tiles tiles(V, N);
  at::parallel_for(0, tiles.count(), tiles.grain(), [&](int64_t i0, int64_t i1) {
    float f[kTileCols];
    for (int64_t i = i0; i < i1; ++i) {
      int64_t b, r0, rows, c0, w;
      tiles.at(i, b, r0, rows, c0, w);
      // exp(m_b - lse) * scale: the softmax of the block's values, times the column's weight.
      for (int64_t j = 0; j < w; ++j) {
        const int64_t n = c0 + j;
        f[j] = scale[n] == 0.0f
                   ? 0.0f
                   : static_cast<float>(std::exp(double(block_max[b * N + n]) - double(lse[n])) *
                                        double(scale[n]));
      }
      float* t = lt + r0 * ld + c0;
      scale_tile_any(t, ld, rows, w, f);
      for (int64_t j = 0; j < w; ++j) {  // minus the one-hot target, if it lies in this block
        const int64_t n = c0 + j;
        if (scale[n] != 0.0f && target[n] >= r0 && target[n] < r0 + rows) {
          t[(target[n] - r0) * ld + j] -= scale[n];
        }
      }
    }
  });
}

}  // namespace concord::kernels::cpu
