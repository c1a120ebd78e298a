// 3x3 convolution op: checks, the Winograd forward and weight gradient over
// kernels/cpu/winograd.cpp, the autograd Function (Winograd's input and weight gradients, the
// bias gradient a sum), the dispatch and the composite reference (see
// include/concord/ops/conv3x3.h).
#include "concord/ops/conv3x3.h"

#include <atomic>

#include <torch/autograd.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "../../kernels/cpu/winograd.h"
#include "output.h"

namespace concord::ops {
namespace {

namespace k = kernels::cpu;

std::atomic<Conv3x3Winograd> g_mode{Conv3x3Winograd::kAuto};

void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  CONCORD_CHECK(x.defined() && w.defined(), op, ": x and weight must be defined");
  CONCORD_CHECK(x.dim() == 4, op, ": x must be [N, C, H, W], got ", x.sizes());
  CONCORD_CHECK(w.dim() == 4 && w.size(2) == 3 && w.size(3) == 3, op,
                ": weight must be [K, C, 3, 3], got ", w.sizes());
  CONCORD_CHECK(w.size(1) == x.size(1), op, ": weight has ", w.size(1), " input channels, x has ",
                x.size(1));
  CONCORD_CHECK(!b.defined() || (b.dim() == 1 && b.size(0) == w.size(0)), op, ": bias must be [",
                w.size(0), "], got ", b.sizes());
}

bool winograd_available(const at::Tensor& x, const at::Tensor& w) {
  return fused_ops_enabled() && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         w.scalar_type() == at::kFloat && w.device().is_cpu();
}

// Scratch of at least `floats` fp32 values for U, V and M. A fresh allocation of a few MB is a
// fresh mapping whose first writes fault page by page (perf: 0.7M faults in one run of
// bench_ops_conv3x3, most in the filter transform), so the calling thread keeps its scratch
// between calls while it is at most kKeptBytes; larger ones (SDXL's widest levels, whose
// products take far longer than the faults) are allocated per call.
at::Tensor scratch(int64_t floats) {
  constexpr int64_t kKeptBytes = int64_t{64} << 20;
  thread_local at::Tensor kept;
  if (kept.defined() && kept.numel() >= floats) return kept;
  at::Tensor fresh = at::empty({floats}, at::TensorOptions().dtype(at::kFloat));
  if (floats * static_cast<int64_t>(sizeof(float)) <= kKeptBytes) kept = fresh;
  return fresh;
}

// One call's three areas of scratch, for T = N ceil(H/4) ceil(W/4) tiles: the filters' [36, K, C]
// (U, or dU in the weight gradient), the input tiles' 36 x [C, ld] (V) and the products' 36 x
// [K, ld] (M, or dM).
struct Scratch {
  at::Tensor buffer;  // owns the three
  float *filters, *tiles, *products;
  int64_t T;
};

Scratch winograd_scratch(int64_t N, int64_t C, int64_t K, int64_t H, int64_t W) {
  Scratch s;
  s.T = N * k::winograd_tiles(H) * k::winograd_tiles(W);
  const int64_t ld = k::winograd_row_stride(s.T);
  const int64_t u_size = k::kWinogradPoints * K * C;
  const int64_t v_size = k::kWinogradPoints * k::winograd_point_stride(C, ld);
  const int64_t m_size = k::kWinogradPoints * k::winograd_point_stride(K, ld);
  s.buffer = scratch(u_size + v_size + m_size);
  s.filters = s.buffer.data_ptr<float>();
  s.tiles = s.filters + u_size;
  s.products = s.tiles + v_size;
  return s;
}

at::Tensor winograd(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in) {
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous();
  const at::Tensor b = b_in.defined() ? b_in.contiguous() : b_in;
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
  at::Tensor y = detail::empty_output({N, K, H, W}, x.options());
  if (y.numel() == 0) return y;
  const Scratch sc = winograd_scratch(N, C, K, H, W);
  k::winograd_weight_transform(w.data_ptr<float>(), sc.filters, K, C);
  k::winograd_input_transform(x.data_ptr<float>(), sc.tiles, N, C, H, W);
  // The 36 products [K, C] x [C, T] are small (T is 128 for two 32x32 latents): one at::bmm
  // ran them at a third to a half of BLAS's peak, and OpenBLAS serialises calls from several
  // threads; the kernel's own register-blocked products run them in parallel.
  k::winograd_products(sc.filters, sc.tiles, sc.products, K, C, sc.T);
  k::winograd_output_transform(sc.products, b.defined() ? b.data_ptr<float>() : nullptr,
                               y.data_ptr<float>(), N, K, H, W);
  return y;
}

// dw [K, C, 3, 3] of y = conv3x3(x, w) for the output gradient dy [N, K, H, W]: the forward's
// algorithm run backwards through its products. With V = B^T x B per input tile (the forward's
// input transform, recomputed) and dM = A dy A^T per output tile, dU_k,c = sum over tiles of
// dM_k . V_c, 36 products [K, T] x [T, C], and dw = G^T dU G.
at::Tensor winograd_weight_grad(const at::Tensor& x_in, const at::Tensor& dy_in) {
  const at::Tensor x = x_in.contiguous(), dy = dy_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = dy.size(1);
  at::Tensor dw = at::empty({K, C, 3, 3}, x.options());
  if (x.numel() == 0 || dy.numel() == 0) return dw.zero_();
  const Scratch sc = winograd_scratch(N, C, K, H, W);  // filters: dU, products: dM
  k::winograd_input_transform(x.data_ptr<float>(), sc.tiles, N, C, H, W);
  k::winograd_output_gradient_transform(dy.data_ptr<float>(), sc.products, N, K, H, W);
  k::winograd_weight_gradient_products(sc.products, sc.tiles, sc.filters, K, C, sc.T);
  k::winograd_weight_gradient_transform(sc.filters, dw.data_ptr<float>(), K, C);
  return dw;
}

// Forward by Winograd. Backward: the input gradient is itself a 3x3 convolution, of dy with the
// filters flipped and transposed (dx[c] = sum_k flip(w[k, c]) (*) dy[k], padding 1), so it runs
// the Winograd forward where that shape pays; the weight gradient runs Winograd's where the
// forward did (the same tiles and channels), and the bias gradient is dy summed.
struct Conv3x3Function : public torch::autograd::Function<Conv3x3Function> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& w, const at::Tensor& b) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias_needs_grad"] = b.requires_grad();
    return winograd(x, w, b);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1];
    const bool has_bias = ctx->saved_data["bias_needs_grad"].toBool();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor dy = grads[0].contiguous();
    at::Tensor dx, dw, db;
    bool dx_by_aten = ctx->needs_input_grad(0), dw_by_aten = ctx->needs_input_grad(1);
    // The choice reads only shapes and dtypes: the flipped copy is made only when it is used.
    if (dx_by_aten && conv3x3_uses_winograd(dy, w.transpose(0, 1))) {
      dx = winograd(dy, w.flip({2, 3}).transpose(0, 1).contiguous(), at::Tensor());  // [C, K, 3, 3]
      dx_by_aten = false;
    }
    if (dw_by_aten && conv3x3_uses_winograd(x, w)) {
      dw = winograd_weight_grad(x, dy);
      dw_by_aten = false;
    }
    if (has_bias && ctx->needs_input_grad(2)) db = dy.sum({0, 2, 3});
    if (dx_by_aten || dw_by_aten) {
      auto [dx_aten, dw_aten, unused] =
          at::convolution_backward(dy, x, w, c10::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                   {dx_by_aten, dw_by_aten, false});
      if (dx_by_aten) dx = dx_aten;
      if (dw_by_aten) dw = dw_aten;
    }
    return {dx, dw, db};
  }
};

}  // namespace

at::Tensor conv3x3_reference(const at::Tensor& x, const at::Tensor& weight,
                             const at::Tensor& bias) {
  check_inputs("conv3x3_reference", x, weight, bias);
  return at::conv2d(x, weight, bias, {1, 1}, {1, 1});
}

void set_conv3x3_winograd(Conv3x3Winograd mode) { g_mode.store(mode, std::memory_order_relaxed); }
Conv3x3Winograd conv3x3_winograd() { return g_mode.load(std::memory_order_relaxed); }

bool conv3x3_uses_winograd(const at::Tensor& x, const at::Tensor& weight) {
  const Conv3x3Winograd mode = conv3x3_winograd();
  if (mode == Conv3x3Winograd::kNever || !x.defined() || !weight.defined() || x.dim() != 4 ||
      !winograd_available(x, weight)) {
    return false;
  }
  if (mode == Conv3x3Winograd::kAlways) return true;
  // The products save 4x of the arithmetic; the transforms cost per tile and channel, and the
  // filters' transform (36 K C values written) is paid again at every call. Measured with
  // benchmarks/bench_ops_conv3x3.cpp (docs/benchmarks.md, 2 threads, AVX2):
  // - from 32 tiles (a batch of two 16x16 maps) with 128-512 channels Winograd is 1.5-1.8x
  //   faster than ATen's convolution, ~2x at SDXL's sizes, 1.5-1.6x with 32-64 channels;
  // - at 8 tiles (two 8x8 maps) it is 1.5-2.7x slower: the filters' transform alone costs what
  //   the convolution does;
  // - with 16 channels it is 1.3-1.7x slower (the miniatures' U-Nets), even at 32 channels on
  //   8x8 maps; with 4 on either side (conv_in, conv_out) the input or the output transform
  //   costs about what the whole convolution does.
  constexpr int64_t kMinTiles = 32, kMinChannels = 32;
  const int64_t tiles = x.size(0) * k::winograd_tiles(x.size(2)) * k::winograd_tiles(x.size(3));
  return tiles >= kMinTiles && x.size(1) >= kMinChannels && weight.size(0) >= kMinChannels;
}

at::Tensor conv3x3_winograd_forward(const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& bias) {
  check_inputs("conv3x3_winograd_forward", x, weight, bias);
  CONCORD_CHECK(
      x.device().is_cpu() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
          weight.device().is_cpu() &&
          (!bias.defined() || (bias.scalar_type() == at::kFloat && bias.device().is_cpu())),
      "conv3x3_winograd_forward: CPU fp32 tensors only, got x ", x.scalar_type(), " on ",
      x.device());
  at::NoGradGuard no_grad;
  return winograd(x, weight, bias);
}

at::Tensor conv3x3_winograd_weight_grad(const at::Tensor& x, const at::Tensor& dy) {
  CONCORD_CHECK(x.defined() && dy.defined(),
                "conv3x3_winograd_weight_grad: x and dy must be defined");
  CONCORD_CHECK(x.dim() == 4 && dy.dim() == 4 && dy.size(0) == x.size(0) &&
                    dy.size(2) == x.size(2) && dy.size(3) == x.size(3),
                "conv3x3_winograd_weight_grad: dy must be [N, K, H, W] for x ", x.sizes(), ", got ",
                dy.sizes());
  CONCORD_CHECK(x.device().is_cpu() && dy.device().is_cpu() && x.scalar_type() == at::kFloat &&
                    dy.scalar_type() == at::kFloat,
                "conv3x3_winograd_weight_grad: CPU fp32 tensors only, got x ", x.scalar_type(),
                " on ", x.device(), " and dy ", dy.scalar_type(), " on ", dy.device());
  at::NoGradGuard no_grad;
  return winograd_weight_grad(x, dy);
}

at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  check_inputs("conv3x3", x, weight, bias);
  if (!conv3x3_uses_winograd(x, weight) || (bias.defined() && bias.scalar_type() != at::kFloat)) {
    return at::conv2d(x, weight, bias, {1, 1}, {1, 1});
  }
  const bool grad = at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() ||
                                                   (bias.defined() && bias.requires_grad()));
  if (!grad) return winograd(x, weight, bias);
  // LibTorch 1.13's custom Functions take no undefined inputs: without a bias, a zero one that
  // needs no gradient (adding it in the output transform costs nothing).
  return Conv3x3Function::apply(x, weight,
                                bias.defined() ? bias : at::zeros({weight.size(0)}, x.options()));
}

}  // namespace concord::ops
