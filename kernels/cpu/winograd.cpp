// Winograd F(4x4, 3x3) transforms (see winograd.h).
//
// B^T, G and A^T of F(4, 3) with the points 0, 1, -1, 2, -2 and infinity (Lavin and Gray,
// arXiv 1509.09308, section 4.2):
//
//   B^T = [4  0 -5  0  1  0]    G = [ 1/4     0     0]    A^T = [1  1  1  1  1  0]
//         [0 -4 -4  1  1  0]        [-1/6  -1/6  -1/6]          [0  1 -1  2 -2  0]
//         [0  4 -4 -1  1  0]        [-1/6   1/6  -1/6]          [0  1  1  4  4  0]
//         [0 -2 -1  2  1  0]        [1/24  1/12   1/6]          [0  1 -1  8 -8  1]
//         [0  2 -1 -2  1  0]        [1/24 -1/12   1/6]
//         [0  4  0 -5  0  1]        [   0     0     1]
//
// Each 2D transform is two 1D passes. The input transform's first pass (B^T over the six rows
// of a tile row) runs along the rows split by phase, contiguous; the second (over the columns of
// each tile) and the output transform's passes run along the tiles of a tile row, which are
// contiguous in V and M. All in fp32; G's entries are rounded to fp32 once.
#include "winograd.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include <ATen/Parallel.h>

#include "cpu_isa.h"
#include "vec_math.h"

#pragma GCC diagnostic ignored "-Wpsabi"  // vectors stay inside inlined code

namespace concord::kernels::cpu {
namespace {

constexpr int64_t kA = kWinogradAlpha;
constexpr int64_t kM = kWinogradTile;

// G, rounded to fp32 once (like the input's and output's integers).
constexpr float kG[kA][3] = {{0.25f, 0, 0},
                             {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                             {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                             {1.0f / 24, 1.0f / 12, 1.0f / 6},
                             {1.0f / 24, -1.0f / 12, 1.0f / 6},
                             {0, 0, 1}};

// out[p] = (A^T m)[p] for six vectors of n <= lanes values: m[0], m[s], ..., m[5 s].
template <class V>
CONCORD_ALWAYS_INLINE void at6_vec(const float* m, int64_t s, float* out, int64_t os, int64_t n) {
  const V m0 = vmath::load_n<V>(n, m), m1 = vmath::load_n<V>(n, m + s),
          m2 = vmath::load_n<V>(n, m + 2 * s), m3 = vmath::load_n<V>(n, m + 3 * s),
          m4 = vmath::load_n<V>(n, m + 4 * s), m5 = vmath::load_n<V>(n, m + 5 * s);
  const V a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
  vmath::store_n<V>(n, out, m0 + a + c);
  vmath::store_n<V>(n, out + os, b + vmath::splat<V>(2.0f) * d);
  vmath::store_n<V>(n, out + 2 * os, a + vmath::splat<V>(4.0f) * c);
  vmath::store_n<V>(n, out + 3 * os, b + vmath::splat<V>(8.0f) * d + m5);
}

// out[q] = (B^T d)[q] for six vectors of n <= lanes values: d[0], d[s], ..., d[5 s].
template <class V>
CONCORD_ALWAYS_INLINE void bt6_vec(const float* d, int64_t s, float* out, int64_t os, int64_t n) {
  const V d0 = vmath::load_n<V>(n, d), d1 = vmath::load_n<V>(n, d + s),
          d2 = vmath::load_n<V>(n, d + 2 * s), d3 = vmath::load_n<V>(n, d + 3 * s),
          d4 = vmath::load_n<V>(n, d + 4 * s), d5 = vmath::load_n<V>(n, d + 5 * s);
  const V four = vmath::splat<V>(4.0f), five = vmath::splat<V>(5.0f), two = vmath::splat<V>(2.0f);
  vmath::store_n<V>(n, out, four * d0 - five * d2 + d4);
  vmath::store_n<V>(n, out + os, d3 + d4 - four * (d1 + d2));
  vmath::store_n<V>(n, out + 2 * os, d4 - d3 + four * (d1 - d2));
  vmath::store_n<V>(n, out + 3 * os, d4 - d2 + two * (d3 - d1));
  vmath::store_n<V>(n, out + 4 * os, d4 - d2 + two * (d1 - d3));
  vmath::store_n<V>(n, out + 5 * os, four * d1 - five * d3 + d5);
}

// B^T along the columns of tiles [j, j + n) of one row l: d0..d3 are entry j of phases 0-3, d4
// and d5 entry j + 1 of phases 0 and 1 (see input_plane); out[q point_stride + j] for q < 6.
template <class V>
CONCORD_ALWAYS_INLINE void bt6_tiles(const float* e0, int64_t Wq, float* o, int64_t point_stride,
                                     int64_t j, int64_t n) {
  const float *e1 = e0 + Wq, *e2 = e1 + Wq, *e3 = e2 + Wq;
  const V four = vmath::splat<V>(4.0f), five = vmath::splat<V>(5.0f), two = vmath::splat<V>(2.0f);
  const V d0 = vmath::load_n<V>(n, e0 + j), d1 = vmath::load_n<V>(n, e1 + j),
          d2 = vmath::load_n<V>(n, e2 + j), d3 = vmath::load_n<V>(n, e3 + j),
          d4 = vmath::load_n<V>(n, e0 + j + 1), d5 = vmath::load_n<V>(n, e1 + j + 1);
  vmath::store_n<V>(n, o + j, four * d0 - five * d2 + d4);
  vmath::store_n<V>(n, o + point_stride + j, d3 + d4 - four * (d1 + d2));
  vmath::store_n<V>(n, o + 2 * point_stride + j, d4 - d3 + four * (d1 - d2));
  vmath::store_n<V>(n, o + 3 * point_stride + j, d4 - d2 + two * (d3 - d1));
  vmath::store_n<V>(n, o + 4 * point_stride + j, d4 - d2 + two * (d1 - d3));
  vmath::store_n<V>(n, o + 5 * point_stride + j, four * d1 - five * d3 + d5);
}

// Runs f(vector type, start, count) over [0, n): full vectors of V, then full 4-lane vectors,
// then single floats (vmath's templates take float as a one-lane vector). Small images (4 tiles
// a row at 16x16, 2 at 8x8) never take the partial loads of a vector, which cost more than the
// arithmetic: a memcpy of a variable count each.
template <class V, class F>
CONCORD_ALWAYS_INLINE void over_lanes(int64_t n, F&& f) {
  constexpr int64_t L = vmath::lanes<V>();
  int64_t j = 0;
  for (; j + L <= n; j += L) f(V{}, j, L);
  for (; j + 4 <= n; j += 4) f(vmath::vf4{}, j, int64_t{4});
  for (; j < n; ++j) f(0.0f, j, int64_t{1});
}

// One (n, c) plane into V[k][c][tile0 ...]. A tile row's six input rows are copied zero-padded
// (padded column pc = image column + 1) and split by phase: rows[i][pc % 4][pc / 4], Wq = tW + 1
// entries a phase. Tile j reads the padded columns 4j .. 4j + 5, i.e. entry j of phases 0-3 and
// entry j + 1 of phases 0 and 1, so both passes of B^T run on vectors of consecutive tiles.
template <class V>
CONCORD_ALWAYS_INLINE void input_plane(const float* x, float* Vt, int64_t point_stride, int64_t H,
                                       int64_t W, float* rows, float* t) {
  const int64_t tH = winograd_tiles(H), tW = winograd_tiles(W), Wq = tW + 1, Wr = kM * Wq;
  std::fill(rows, rows + kA * Wr, 0.0f);  // entries outside the image stay 0
  for (int64_t ti = 0; ti < tH; ++ti) {
    for (int64_t i = 0; i < kA; ++i) {
      const int64_t r = kM * ti - 1 + i;
      float* row = rows + i * Wr;
      if (r < 0 || r >= H) {
        std::fill(row, row + Wr, 0.0f);
        continue;
      }
      const float* src = x + r * W;
      for (int64_t q = 0; q < kM; ++q) {  // image column 4 j + q - 1
        float* rq = row + q * Wq;
        const int64_t j1 = std::min(Wq, (W + kM - q) / kM);
        for (int64_t j = q == 0 ? 1 : 0; j < j1; ++j) rq[j] = src[kM * j + q - 1];
      }
    }
    over_lanes<V>(Wr, [&](auto v, int64_t e, int64_t n) {
      bt6_vec<decltype(v)>(rows + e, Wr, t + e, Wr, n);
    });
    float* out = Vt + ti * tW;
    for (int64_t l = 0; l < kA; ++l) {
      float* o = out + l * kA * point_stride;
      over_lanes<V>(tW, [&](auto v, int64_t j, int64_t n) {
        bt6_tiles<decltype(v)>(t + l * Wr, Wq, o, point_stride, j, n);
      });
    }
  }
}

// One (n, k) plane of y from M[k'][k][tile0 ...], both passes of A^T on vectors of consecutive
// tiles (as the input transform): s: [6][4][tW] after A^T over the columns, rowbuf: [4][4][tW]
// after A^T over the rows, i.e. pixel (4 ti + r, 4 tj + q) at rowbuf[r][q][tj], which the last
// loop interleaves into the output row, cropped to W, bias added.
template <class V>
CONCORD_ALWAYS_INLINE void output_plane(const float* M, float bias, float* y, int64_t point_stride,
                                        int64_t H, int64_t W, float* s, float* rowbuf) {
  const int64_t tH = winograd_tiles(H), tW = winograd_tiles(W), Wr = kM * tW;
  for (int64_t ti = 0; ti < tH; ++ti) {
    const float* m = M + ti * tW;
    for (int64_t i = 0; i < kA; ++i) {
      const float* mi = m + i * kA * point_stride;
      float* si = s + i * kM * tW;
      over_lanes<V>(tW, [&](auto v, int64_t j, int64_t n) {
        at6_vec<decltype(v)>(mi + j, point_stride, si + j, tW, n);
      });
    }
    for (int64_t q = 0; q < kM; ++q) {
      over_lanes<V>(tW, [&](auto v, int64_t j, int64_t n) {
        at6_vec<decltype(v)>(s + q * tW + j, Wr, rowbuf + q * tW + j, Wr, n);
      });
    }
    for (int64_t r = 0; r < kM && kM * ti + r < H; ++r) {
      const float* src = rowbuf + r * Wr;
      float* dst = y + (kM * ti + r) * W;
      const int64_t whole = W / kM;  // tiles whose four columns are all inside the image
      for (int64_t tj = 0; tj < whole; ++tj) {
        for (int64_t q = 0; q < kM; ++q) dst[kM * tj + q] = src[q * tW + tj] + bias;
      }
      for (int64_t col = kM * whole; col < W; ++col) {
        dst[col] = src[(col % kM) * tW + col / kM] + bias;
      }
    }
  }
}

// out[a] = (A y)[a] for four vectors y[0], y[s], y[2 s], y[3 s] of n <= lanes values: the
// transpose of A^T, which the weight gradient applies to the output gradient's tiles.
template <class V>
CONCORD_ALWAYS_INLINE void a4_vec(const float* y, int64_t s, float* out, int64_t os, int64_t n) {
  const V y0 = vmath::load_n<V>(n, y), y1 = vmath::load_n<V>(n, y + s),
          y2 = vmath::load_n<V>(n, y + 2 * s), y3 = vmath::load_n<V>(n, y + 3 * s);
  const V a = y0 + y2, b = y1 + y3;
  const V c = y0 + vmath::splat<V>(4.0f) * y2,
          d = vmath::splat<V>(2.0f) * y1 + vmath::splat<V>(8.0f) * y3;
  vmath::store_n<V>(n, out, y0);
  vmath::store_n<V>(n, out + os, a + b);
  vmath::store_n<V>(n, out + 2 * os, a - b);
  vmath::store_n<V>(n, out + 3 * os, c + d);
  vmath::store_n<V>(n, out + 4 * os, c - d);
  vmath::store_n<V>(n, out + 5 * os, y3);
}

// One (n, k) plane of dy into dM[k'][k][tile0 ...] = (A dY A^T)[k'] per 4x4 tile. A tile row's
// four rows are copied split by phase (rows[i][q][j] = dy[4 ti + i][4 j + q], zero outside the
// image: the cropped outputs have no gradient), then A runs over the rows on vectors along the
// row, and over the phases on vectors of consecutive tiles, as in input_plane.
template <class V>
CONCORD_ALWAYS_INLINE void gradient_plane(const float* dy, float* out_plane, int64_t point_stride,
                                          int64_t H, int64_t W, float* rows, float* t) {
  const int64_t tH = winograd_tiles(H), tW = winograd_tiles(W), Wr = kM * tW;
  for (int64_t ti = 0; ti < tH; ++ti) {
    for (int64_t i = 0; i < kM; ++i) {
      const int64_t r = kM * ti + i;
      float* row = rows + i * Wr;
      if (r >= H) {
        std::fill(row, row + Wr, 0.0f);
        continue;
      }
      const float* src = dy + r * W;
      for (int64_t q = 0; q < kM; ++q) {  // image column 4 j + q
        float* rq = row + q * tW;
        const int64_t j1 = q < W ? (W - q + kM - 1) / kM : 0;
        for (int64_t j = 0; j < j1; ++j) rq[j] = src[kM * j + q];
        std::fill(rq + j1, rq + tW, 0.0f);
      }
    }
    over_lanes<V>(
        Wr, [&](auto v, int64_t e, int64_t n) { a4_vec<decltype(v)>(rows + e, Wr, t + e, Wr, n); });
    float* out = out_plane + ti * tW;
    for (int64_t l = 0; l < kA; ++l) {
      float* o = out + l * kA * point_stride;
      over_lanes<V>(tW, [&](auto v, int64_t j, int64_t n) {
        a4_vec<decltype(v)>(t + l * Wr + j, tW, o + j, point_stride, n);
      });
    }
  }
}

template <class V>
CONCORD_ALWAYS_INLINE void gradient_planes(const float* dy, float* dM, int64_t p0, int64_t p1,
                                           int64_t K, int64_t ld, int64_t H, int64_t W, float* rows,
                                           float* t) {
  const int64_t tiles = winograd_tiles(H) * winograd_tiles(W);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / K, k = p % K;
    gradient_plane<V>(dy + p * H * W, dM + k * ld + n * tiles, winograd_point_stride(K, ld), H, W,
                      rows, t);
  }
}

template <class V>
CONCORD_ALWAYS_INLINE void input_planes(const float* x, float* Vt, int64_t p0, int64_t p1,
                                        int64_t C, int64_t ld, int64_t H, int64_t W, float* rows,
                                        float* t) {
  const int64_t tiles = winograd_tiles(H) * winograd_tiles(W);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / C, c = p % C;
    input_plane<V>(x + p * H * W, Vt + c * ld + n * tiles, winograd_point_stride(C, ld), H, W, rows,
                   t);
  }
}

template <class V>
CONCORD_ALWAYS_INLINE void output_planes(const float* M, const float* bias, float* y, int64_t p0,
                                         int64_t p1, int64_t K, int64_t ld, int64_t H, int64_t W,
                                         float* s, float* rowbuf) {
  const int64_t tiles = winograd_tiles(H) * winograd_tiles(W);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / K, k = p % K;
    output_plane<V>(M + k * ld + n * tiles, bias ? bias[k] : 0.0f, y + p * H * W,
                    winograd_point_stride(K, ld), H, W, s, rowbuf);
  }
}

// Row panels of the point products, one parallel work item each: 48 rows of K (8 groups of 6).
constexpr int64_t kPanelRows = 48;

// out[0:R, 0:n] = a[0:R, :] b[:, 0:n] for one group of R <= 6 rows and n <= 2 L columns, over
// `inner` terms: 2R vector accumulators stay in registers over the whole sum (12 + 3 of AVX2's
// 16), the columns of b are read once for the group, the rows of a broadcast one value at a time.
template <class V, int R>
CONCORD_ALWAYS_INLINE void product_block(const float* a, int64_t lda, int64_t inner, const float* b,
                                         int64_t ldb, float* out, int64_t ldo, int64_t n) {
  constexpr int64_t L = vmath::lanes<V>();
  V acc0[R], acc1[R];
  for (int i = 0; i < R; ++i) acc0[i] = acc1[i] = V{};
  if (n == 2 * L) {
    for (int64_t c = 0; c < inner; ++c) {
      const V b0 = vmath::load<V>(b + c * ldb), b1 = vmath::load<V>(b + c * ldb + L);
      for (int i = 0; i < R; ++i) {
        const V s = vmath::splat<V>(a[i * lda + c]);
        acc0[i] += s * b0;
        acc1[i] += s * b1;
      }
    }
  } else {
    const int64_t n0 = std::min(n, L), n1 = n - n0;
    for (int64_t c = 0; c < inner; ++c) {
      const V b0 = vmath::load_n<V>(n0, b + c * ldb);
      const V b1 = n1 > 0 ? vmath::load_n<V>(n1, b + c * ldb + L) : V{};
      for (int i = 0; i < R; ++i) {
        const V s = vmath::splat<V>(a[i * lda + c]);
        acc0[i] += s * b0;
        acc1[i] += s * b1;
      }
    }
  }
  const int64_t n0 = std::min(n, L), n1 = n - n0;
  for (int i = 0; i < R; ++i) {
    vmath::store_n<V>(n0, out + i * ldo, acc0[i]);
    if (n1 > 0) vmath::store_n<V>(n1, out + i * ldo + L, acc1[i]);
  }
}

// The 36 products out_p = a_p b_p of one call, [rows, inner] x [inner, cols] each, row-major
// with the given row strides; each point's matrices start `*_point` floats after the previous
// point's. The forward is M = U V (rows K, inner C, cols T), the weight gradient dU = dM V^T
// (rows K, inner T, cols C).
//
// `b_packed`: b holds its columns in blocks of the products' block width W (two vectors), each
// block [inner, W] contiguous, one after another (ldb is then W): what the weight gradient
// packs V^T into, so that a block's sum over thousands of tiles reads one contiguous stretch
// instead of one 64-byte piece from each of thousands of rows (at SDXL's 128x128 latents, 2048
// rows 2.6 KB apart: a TLB miss a row, 32 against 45-51 GFLOP/s).
struct PointProducts {
  const float* a;
  int64_t a_point, lda;
  const float* b;
  int64_t b_point, ldb;
  float* out;
  int64_t out_point, ldo;
  int64_t rows, inner, cols;
  bool b_packed = false;

  int64_t panels() const { return (rows + kPanelRows - 1) / kPanelRows; }
};

// The work items [i0, i1) of `pp` (item = point * panels + panel of 48 rows).
template <class V>
CONCORD_ALWAYS_INLINE void products(const PointProducts& pp, int64_t i0, int64_t i1) {
  constexpr int64_t W = 2 * vmath::lanes<V>();
  const int64_t panels = pp.panels();
  for (int64_t item = i0; item < i1; ++item) {
    const int64_t p = item / panels, r0 = (item % panels) * kPanelRows;
    const int64_t r1 = std::min(pp.rows, r0 + kPanelRows);
    const float* a = pp.a + p * pp.a_point;
    const float* b = pp.b + p * pp.b_point;
    float* out = pp.out + p * pp.out_point;
    for (int64_t t = 0; t < pp.cols; t += W) {
      const int64_t n = std::min(W, pp.cols - t);
      const float* bt = pp.b_packed ? b + t * pp.inner : b + t;  // t / W blocks of inner x W
      for (int64_t r = r0; r < r1; r += 6) {
        const float* ar = a + r * pp.lda;
        float* o = out + r * pp.ldo + t;
        const int64_t in = pp.inner, lda = pp.lda, ldb = pp.ldb, ldo = pp.ldo;
        // clang-format off
        // Inlined (not through a pointer) so that each block is compiled for this build's ISA.
        switch (std::min<int64_t>(6, r1 - r)) {
          case 6: product_block<V, 6>(ar, lda, in, bt, ldb, o, ldo, n); break;
          case 5: product_block<V, 5>(ar, lda, in, bt, ldb, o, ldo, n); break;
          case 4: product_block<V, 4>(ar, lda, in, bt, ldb, o, ldo, n); break;
          case 3: product_block<V, 3>(ar, lda, in, bt, ldb, o, ldo, n); break;
          case 2: product_block<V, 2>(ar, lda, in, bt, ldb, o, ldo, n); break;
          default: product_block<V, 1>(ar, lda, in, bt, ldb, o, ldo, n); break;
        }
        // clang-format on
      }
    }
  }
}

// The weight gradient's products for points [p0, p1): dU_p = dM_p V_p^T, [K, T] x [T, C]. Each
// point's V_p ([C, T], row stride ld) is first transposed and packed into vt: blocks of W = two
// vectors of C, each [T, W] contiguous (PointProducts::b_packed). The products then run as the
// forward's, broadcasting dM and reading a block's rows of V^T as vectors along C.
template <class V>
CONCORD_ALWAYS_INLINE void weight_gradient_points(const float* dM, const float* Vt, float* dU,
                                                  int64_t K, int64_t C, int64_t T, int64_t p0,
                                                  int64_t p1, float* vt) {
  constexpr int64_t W = 2 * vmath::lanes<V>(), kRows = 16;
  const int64_t ld = winograd_row_stride(T);
  for (int64_t p = p0; p < p1; ++p) {
    const float* v = Vt + p * winograd_point_stride(C, ld);
    for (int64_t c0 = 0; c0 < C; c0 += W) {
      const int64_t w = std::min(W, C - c0);
      float* block = vt + c0 * T;  // block c0 / W: [T, W]
      for (int64_t t0 = 0; t0 < T; t0 += kRows) {
        const int64_t t1 = std::min(T, t0 + kRows);
        for (int64_t t = t0; t < t1; ++t) {
          for (int64_t c = 0; c < w; ++c) block[t * W + c] = v[(c0 + c) * ld + t];
        }
      }
    }
    PointProducts one{
        dM + p * winograd_point_stride(K, ld), 0, ld, vt, 0, W, dU + p * K * C, 0, C, K, T, C};
    one.b_packed = true;
    products<V>(one, 0, one.panels());
  }
}

// The builds (cpu_isa.h): baseline, AVX2+FMA, AVX-512.
void input_planes_base(const float* x, float* V, int64_t p0, int64_t p1, int64_t C, int64_t ld,
                       int64_t H, int64_t W, float* rows, float* t) {
  input_planes<vmath::vf4>(x, V, p0, p1, C, ld, H, W, rows, t);
}
void output_planes_base(const float* M, const float* bias, float* y, int64_t p0, int64_t p1,
                        int64_t K, int64_t ld, int64_t H, int64_t W, float* s, float* rowbuf) {
  output_planes<vmath::vf4>(M, bias, y, p0, p1, K, ld, H, W, s, rowbuf);
}
void products_base(const PointProducts& pp, int64_t i0, int64_t i1) {
  products<vmath::vf4>(pp, i0, i1);
}
void gradient_planes_base(const float* dy, float* dM, int64_t p0, int64_t p1, int64_t K, int64_t ld,
                          int64_t H, int64_t W, float* rows, float* t) {
  gradient_planes<vmath::vf4>(dy, dM, p0, p1, K, ld, H, W, rows, t);
}
void weight_gradient_points_base(const float* dM, const float* V, float* dU, int64_t K, int64_t C,
                                 int64_t T, int64_t p0, int64_t p1, float* vt) {
  weight_gradient_points<vmath::vf4>(dM, V, dU, K, C, T, p0, p1, vt);
}
#ifdef CONCORD_CPU_X86_VARIANTS
__attribute__((target("avx2,fma"))) void products_avx2(const PointProducts& pp, int64_t i0,
                                                       int64_t i1) {
  products<vmath::vf>(pp, i0, i1);
}
__attribute__((target("avx512f,avx2,fma"))) void products_avx512(const PointProducts& pp,
                                                                 int64_t i0, int64_t i1) {
  products<vmath::vf16>(pp, i0, i1);
}
__attribute__((target("avx2,fma"))) void input_planes_avx2(const float* x, float* V, int64_t p0,
                                                           int64_t p1, int64_t C, int64_t ld,
                                                           int64_t H, int64_t W, float* rows,
                                                           float* t) {
  input_planes<vmath::vf>(x, V, p0, p1, C, ld, H, W, rows, t);
}
__attribute__((target("avx512f,avx2,fma"))) void input_planes_avx512(const float* x, float* V,
                                                                     int64_t p0, int64_t p1,
                                                                     int64_t C, int64_t ld,
                                                                     int64_t H, int64_t W,
                                                                     float* rows, float* t) {
  input_planes<vmath::vf16>(x, V, p0, p1, C, ld, H, W, rows, t);
}
__attribute__((target("avx2,fma"))) void output_planes_avx2(const float* M, const float* bias,
                                                            float* y, int64_t p0, int64_t p1,
                                                            int64_t K, int64_t ld, int64_t H,
                                                            int64_t W, float* s, float* rowbuf) {
  output_planes<vmath::vf>(M, bias, y, p0, p1, K, ld, H, W, s, rowbuf);
}
__attribute__((target("avx512f,avx2,fma"))) void output_planes_avx512(
    const float* M, const float* bias, float* y, int64_t p0, int64_t p1, int64_t K, int64_t ld,
    int64_t H, int64_t W, float* s, float* rowbuf) {
  output_planes<vmath::vf16>(M, bias, y, p0, p1, K, ld, H, W, s, rowbuf);
}
__attribute__((target("avx2,fma"))) void gradient_planes_avx2(const float* dy, float* dM,
                                                              int64_t p0, int64_t p1, int64_t K,
                                                              int64_t ld, int64_t H, int64_t W,
                                                              float* rows, float* t) {
  gradient_planes<vmath::vf>(dy, dM, p0, p1, K, ld, H, W, rows, t);
}
__attribute__((target("avx512f,avx2,fma"))) void gradient_planes_avx512(const float* dy, float* dM,
                                                                        int64_t p0, int64_t p1,
                                                                        int64_t K, int64_t ld,
                                                                        int64_t H, int64_t W,
                                                                        float* rows, float* t) {
  gradient_planes<vmath::vf16>(dy, dM, p0, p1, K, ld, H, W, rows, t);
}
__attribute__((target("avx2,fma"))) void weight_gradient_points_avx2(const float* dM,
                                                                     const float* V, float* dU,
                                                                     int64_t K, int64_t C,
                                                                     int64_t T, int64_t p0,
                                                                     int64_t p1, float* vt) {
  weight_gradient_points<vmath::vf>(dM, V, dU, K, C, T, p0, p1, vt);
}
__attribute__((target("avx512f,avx2,fma"))) void weight_gradient_points_avx512(
    const float* dM, const float* V, float* dU, int64_t K, int64_t C, int64_t T, int64_t p0,
    int64_t p1, float* vt) {
  weight_gradient_points<vmath::vf16>(dM, V, dU, K, C, T, p0, p1, vt);
}
#endif

void run_products(const PointProducts& pp) {
  at::parallel_for(0, kWinogradPoints * pp.panels(), 1,
                   [&](int64_t i0, int64_t i1) { CONCORD_CPU_DISPATCH(products, pp, i0, i1); });
}

// Planes a parallel_for chunk takes: about 16K pixels of work each.
int64_t plane_grain(int64_t H, int64_t W) { return std::max<int64_t>(1, 16384 / (H * W)); }

}  // namespace

void winograd_weight_transform(const float* w, float* U, int64_t K, int64_t C) {
  // Per filter row k: the nine taps in planes over c, then G along the filter's rows and along
  // its columns, each pass a loop over c that the compiler vectorises; U[point][k][:] is written
  // contiguously.
  const auto& G = kG;
  const int64_t point_stride = K * C;
  at::parallel_for(
      0, K, std::max<int64_t>(1, 2048 / std::max<int64_t>(1, C)), [&](int64_t k0, int64_t k1) {
        std::vector<float> buf((9 + kA * 3) * C);
        float* taps = buf.data();    // [9][C]
        float* rows = taps + 9 * C;  // [6][3][C]: G g
        for (int64_t k = k0; k < k1; ++k) {
          const float* wk = w + k * C * 9;
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t i = 0; i < 9; ++i) taps[i * C + c] = wk[c * 9 + i];
          }
          for (int64_t a = 0; a < kA; ++a) {
            for (int64_t j = 0; j < 3; ++j) {
              float* out = rows + (a * 3 + j) * C;
              const float *g0 = taps + j * C, *g1 = taps + (3 + j) * C, *g2 = taps + (6 + j) * C;
              for (int64_t c = 0; c < C; ++c)
                out[c] = G[a][0] * g0[c] + G[a][1] * g1[c] + G[a][2] * g2[c];
            }
          }
          for (int64_t a = 0; a < kA; ++a) {
            const float *r0 = rows + (a * 3) * C, *r1 = r0 + C, *r2 = r1 + C;
            for (int64_t b = 0; b < kA; ++b) {
              float* u = U + (a * kA + b) * point_stride + k * C;
              for (int64_t c = 0; c < C; ++c)
                u[c] = r0[c] * G[b][0] + r1[c] * G[b][1] + r2[c] * G[b][2];
            }
          }
        }
      });
}

void winograd_products(const float* U, const float* V, float* M, int64_t K, int64_t C, int64_t T) {
  const int64_t ld = winograd_row_stride(T);
  run_products({U, K * C, C, V, winograd_point_stride(C, ld), ld, M, winograd_point_stride(K, ld),
                ld, K, C, T});
}

void winograd_input_transform(const float* x, float* V, int64_t N, int64_t C, int64_t H,
                              int64_t W) {
  const int64_t ld = winograd_row_stride(N * winograd_tiles(H) * winograd_tiles(W));
  const int64_t Wr = kM * (winograd_tiles(W) + 1);
  at::parallel_for(0, N * C, plane_grain(H, W), [&](int64_t p0, int64_t p1) {
    std::vector<float> buf(2 * kA * Wr);
    float* rows = buf.data();
    float* t = rows + kA * Wr;
    CONCORD_CPU_DISPATCH(input_planes, x, V, p0, p1, C, ld, H, W, rows, t);
  });
}

void winograd_output_transform(const float* M, const float* bias, float* y, int64_t N, int64_t K,
                               int64_t H, int64_t W) {
  const int64_t tW = winograd_tiles(W);
  const int64_t ld = winograd_row_stride(N * winograd_tiles(H) * tW);
  at::parallel_for(0, N * K, plane_grain(H, W), [&](int64_t p0, int64_t p1) {
    std::vector<float> buf(kA * kM * tW + kM * kM * tW);
    float* s = buf.data();
    float* rowbuf = s + kA * kM * tW;
    CONCORD_CPU_DISPATCH(output_planes, M, bias, y, p0, p1, K, ld, H, W, s, rowbuf);
  });
}

void winograd_output_gradient_transform(const float* dy, float* dM, int64_t N, int64_t K, int64_t H,
                                        int64_t W) {
  const int64_t tW = winograd_tiles(W);
  const int64_t ld = winograd_row_stride(N * winograd_tiles(H) * tW);
  const int64_t Wr = kM * tW;
  at::parallel_for(0, N * K, plane_grain(H, W), [&](int64_t p0, int64_t p1) {
    std::vector<float> buf((kM + kA) * Wr);
    float* rows = buf.data();
    float* t = rows + kM * Wr;
    CONCORD_CPU_DISPATCH(gradient_planes, dy, dM, p0, p1, K, ld, H, W, rows, t);
  });
}

void winograd_weight_gradient_products(const float* dM, const float* V, float* dU, int64_t K,
                                       int64_t C, int64_t T) {
  // One work item a point: its packed V^T is made once and read by all of its K rows.
  at::parallel_for(0, kWinogradPoints, 1, [&](int64_t p0, int64_t p1) {
    // V^T in blocks of the widest build's block width (32 columns); the others use a prefix.
    // (Not zero-filled: every entry the products read is written first.)
    const std::unique_ptr<float[]> vt(new float[T * ((C + 31) / 32 * 32)]);
    CONCORD_CPU_DISPATCH(weight_gradient_points, dM, V, dU, K, C, T, p0, p1, vt.get());
  });
}

void winograd_weight_gradient_transform(const float* dU, float* dw, int64_t K, int64_t C) {
  // dw = G^T dU G per (k, c), vectorised over c like the filter transform: dU G over the six
  // rows of points, then G^T over them, then the nine taps scattered into [C, 3, 3].
  const int64_t point_stride = K * C;
  at::parallel_for(0, K, std::max<int64_t>(1, 2048 / std::max<int64_t>(1, C)),
                   [&](int64_t k0, int64_t k1) {
                     std::vector<float> buf((kA * 3 + 9) * C);
                     float* rows = buf.data();         // [6][3][C]: dU G
                     float* taps = rows + kA * 3 * C;  // [9][C]
                     for (int64_t k = k0; k < k1; ++k) {
                       const float* du = dU + k * C;
                       for (int64_t a = 0; a < kA; ++a) {
                         const float* d0 = du + a * kA * point_stride;
                         for (int64_t j = 0; j < 3; ++j) {
                           float* out = rows + (a * 3 + j) * C;
                           for (int64_t c = 0; c < C; ++c) {
                             float sum = 0;
                             for (int64_t b = 0; b < kA; ++b)
                               sum += d0[b * point_stride + c] * kG[b][j];
                             out[c] = sum;
                           }
                         }
                       }
                       for (int64_t i = 0; i < 3; ++i) {
                         for (int64_t j = 0; j < 3; ++j) {
                           float* out = taps + (i * 3 + j) * C;
                           for (int64_t c = 0; c < C; ++c) {
                             float sum = 0;
                             for (int64_t a = 0; a < kA; ++a)
                               sum += kG[a][i] * rows[(a * 3 + j) * C + c];
                             out[c] = sum;
                           }
                         }
                       }
                       float* wk = dw + k * C * 9;
                       for (int64_t c = 0; c < C; ++c) {
                         for (int64_t i = 0; i < 9; ++i) wk[c * 9 + i] = taps[i * C + c];
                       }
                     }
                   });
}

}  // namespace concord::kernels::cpu
