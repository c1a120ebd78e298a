// Winograd F(4x4, 3x3) convolution transforms (Lavin and Gray, "Fast Algorithms for
// Convolutional Neural Networks", arXiv 1509.09308, Eq. 10 in 2D):
//
//   Y = A^T [ (G g G^T) . (B^T d B) ] A
//
// for a 3x3 filter g and a 6x6 input tile d, giving a 4x4 output tile Y with 36 multiplies
// instead of 144. Over channels the elementwise product becomes, for each of the 36 points k,
// one matrix product M_k = U_k V_k (U_k: [K, C] filters, V_k: [C, T] tiles), which
// winograd_products runs as register-blocked blocks: a 3x3 convolution's arithmetic shrinks 4x,
// and the transforms below are the rest. The points are 0, +-1, +-2 and infinity (the paper's
// F(4x4, 3x3) matrices).
//
// Layouts (fp32, contiguous): x and y are NCHW; the convolution has stride 1, padding 1 and
// dilation 1, so y is [N, K, H, W]. Tiles cover the image in 4x4 blocks, T = N * th * tw with
// th = ceil(H / 4), tw = ceil(W / 4), tile t = (n * th + i) * tw + j; V and M keep each row of
// T tiles in ld = winograd_row_stride(T) floats and each point's matrix in
// winograd_point_stride(rows, ld) floats (the padding is never read).
//
// Forward:
// - winograd_weight_transform: w [K, C, 3, 3] -> U [36, K, C];
// - winograd_input_transform: x [N, C, H, W] -> V: 36 x [C, ld] (zero padding outside the image);
// - winograd_products: U, V -> M: 36 x [K, ld];
// - winograd_output_transform: M (+ bias [K] or null) -> y [N, K, H, W].
//
// Weight gradient, the same algorithm run backwards through the products: with dM = A dY A^T per
// output tile, dU_k,c = sum over tiles of dM_k . V_c, and dw = G^T dU G:
// - winograd_output_gradient_transform: dy [N, K, H, W] -> dM: 36 x [K, ld];
// - winograd_weight_gradient_products: dM, V -> dU [36, K, C] (a sum over the T tiles);
// - winograd_weight_gradient_transform: dU -> dw [K, C, 3, 3].
// (The input gradient needs no kernel of its own: it is the forward with the filters flipped
// and transposed.)
//
// Split over channels or points with at::parallel_for; the passes run on explicit vectors inside
// the baseline, AVX2 and AVX-512 builds (cpu_isa.h).
#pragma once
#include <cstdint>

namespace concord::kernels::cpu {

constexpr int64_t kWinogradTile = 4;     ///< output tile side (m)
constexpr int64_t kWinogradAlpha = 6;    ///< input tile side (m + 3 - 1)
constexpr int64_t kWinogradPoints = 36;  ///< alpha^2 matrix products

/// The row stride of V and M for T tiles: T rounded up to 16 floats, plus 16 when that is a
/// multiple of 256 floats (1 KiB), so that the rows a product block reads down one column of
/// tiles do not all fall into the same cache sets (T = 2048 at SDXL's 128x128 latents ran the
/// products at 35 GFLOP/s against 50 at the other shapes).
constexpr int64_t winograd_row_stride(int64_t T) {
  const int64_t ld = (T + 15) / 16 * 16;
  return ld % 256 == 0 ? ld + 16 : ld;
}

/// Floats from one point's [rows, ld] matrix in V or M to the next's: rows * ld plus 16. The
/// transforms write (and read) the 36 points side by side; 36 streams a power of two apart fall
/// into one set of the 8-way L1 cache and evict each other at every store.
constexpr int64_t winograd_point_stride(int64_t rows, int64_t ld) { return rows * ld + 16; }

/// Tiles along a side of `size` pixels: ceil(size / 4).
constexpr int64_t winograd_tiles(int64_t size) {
  return (size + kWinogradTile - 1) / kWinogradTile;
}

void winograd_weight_transform(const float* w, float* U, int64_t K, int64_t C);
void winograd_input_transform(const float* x, float* V, int64_t N, int64_t C, int64_t H, int64_t W);
/// M[p] = U[p] V[p] for the 36 points, [K, C] x [C, T] each. Register-blocked (6 rows
/// of K by two vectors of T, accumulated over all of C), split over (point, 48-row panel) items.
void winograd_products(const float* U, const float* V, float* M, int64_t K, int64_t C, int64_t T);
void winograd_output_transform(const float* M, const float* bias, float* y, int64_t N, int64_t K,
                               int64_t H, int64_t W);

void winograd_output_gradient_transform(const float* dy, float* dM, int64_t N, int64_t K, int64_t H,
                                        int64_t W);
/// dU[p] = dM[p] V[p]^T for the 36 points, [K, T] x [T, C] each: per point, V[p] is transposed
/// into thread-local blocks of V^T, then the forward's register-blocked products run on them.
void winograd_weight_gradient_products(const float* dM, const float* V, float* dU, int64_t K,
                                       int64_t C, int64_t T);
void winograd_weight_gradient_transform(const float* dU, float* dw, int64_t K, int64_t C);

}  // namespace concord::kernels::cpu
