// 3x3 convolution (stride 1, padding 1): Winograd F(4x4, 3x3) (arXiv 1509.09308,
// ops::conv3x3_winograd_forward) against ATen's convolution (at::conv2d: Debian LibTorch 1.13
// picks oneDNN's direct convolution for fp32 here), forward without autograd, on the same tensors
// in the same run.
//
//   bench_ops_conv3x3 [--shapes unet|sdxl|mini] [--batch 2] [--threads 2] [--iters 10]
// Shapes (C -> K at H x W) are a U-Net's levels:
//   unet  bench_unet.py's parity U-Net (channels [128, 256, 512] at a 32x32 latent), its up
//         blocks' concatenated inputs, and conv_in / conv_out (4 channels);
//   sdxl  SDXL's (channels [320, 640, 1280] at a 128x128 latent, 1024 px);
//   mini  the miniatures' (koala_experiment: channels [16, 32, 32] at 8x8 latents, batch 16;
//         run it with --batch 16).
// Prints per shape the median time of each side, ATen's GFLOP/s, the ratio ATen / Winograd,
// whether `conv3x3` picks Winograd there (conv3x3_uses_winograd), the max abs difference (the
// outputs are of order 1), forward + backward under autograd (`conv3x3`, whose input gradient is
// Winograd's where it picks Winograd, against ATen's forward and backward), the time of
// Winograd's four parts run alone (filter transform, input transform, the 36 products with their
// GFLOP/s, output transform), then one JSON line a shape.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/ops/conv3x3.h"
#include "../kernels/cpu/cpu_isa.h"
#include "../kernels/cpu/winograd.h"

#include "bench_flags.h"
#include "bench_timing.h"

namespace {

namespace cb = concord::bench;
namespace k = concord::kernels::cpu;

struct Shape {
  int64_t C, K, size;
};

std::vector<Shape> shapes_named(const std::string& name) {
  if (name == "mini") {
    return {{16, 16, 8}, {32, 32, 8}, {64, 32, 8}, {32, 32, 16}, {64, 64, 16}, {16, 16, 32}};
  }
  if (name == "sdxl") {
    return {{320, 320, 128}, {640, 320, 128},  {640, 640, 64},
            {1280, 640, 64}, {1280, 1280, 32}, {2560, 1280, 32}};
  }
  return {{128, 128, 32}, {256, 128, 32}, {256, 256, 16}, {512, 256, 16},
          {512, 512, 8},  {1024, 512, 8}, {4, 128, 32},   {128, 4, 32}};
}

struct Parts {
  double weights, input, products, output;
  double grad_output, grad_products, grad_weights;  // the weight gradient's own parts
};

// Each part of the Winograd forward alone, on buffers allocated once.
Parts time_parts(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int iters) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = w.size(0);
  const int64_t T = N * k::winograd_tiles(H) * k::winograd_tiles(W);
  const int64_t ld = k::winograd_row_stride(T);
  auto U = torch::empty({36, K, C}), V = torch::empty({36 * k::winograd_point_stride(C, ld)});
  auto M = torch::empty({36 * k::winograd_point_stride(K, ld)});
  auto y = torch::empty({N, K, H, W});
  float *u = U.data_ptr<float>(), *v = V.data_ptr<float>(), *m = M.data_ptr<float>();
  Parts p;
  p.weights =
      cb::median_ms([&] { k::winograd_weight_transform(w.data_ptr<float>(), u, K, C); }, iters);
  p.input = cb::median_ms([&] { k::winograd_input_transform(x.data_ptr<float>(), v, N, C, H, W); },
                          iters);
  p.products = cb::median_ms([&] { k::winograd_products(u, v, m, K, C, T); }, iters);
  p.output = cb::median_ms(
      [&] {
        k::winograd_output_transform(m, b.data_ptr<float>(), y.data_ptr<float>(), N, K, H, W);
      },
      iters);
  const auto dy = torch::randn({N, K, H, W}), dw = torch::empty({K, C, 3, 3});
  p.grad_output = cb::median_ms(
      [&] { k::winograd_output_gradient_transform(dy.data_ptr<float>(), m, N, K, H, W); }, iters);
  p.grad_products =
      cb::median_ms([&] { k::winograd_weight_gradient_products(m, v, u, K, C, T); }, iters);
  p.grad_weights = cb::median_ms(
      [&] { k::winograd_weight_gradient_transform(u, dw.data_ptr<float>(), K, C); }, iters);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes = "unet";
  int64_t batch = 2;
  int threads = 2, iters = 10;
  cb::Flags flags("bench_ops_conv3x3");
  flags.add("shapes", &shapes).add("batch", &batch).add("threads", &threads).add("iters", &iters);
  if (!flags.parse(argc, argv)) return 2;
  if (shapes != "unet" && shapes != "sdxl" && shapes != "mini") {
    std::fprintf(stderr, "bench_ops_conv3x3: --shapes must be unet, sdxl or mini, got '%s'\n%s\n",
                 shapes.c_str(), flags.usage().c_str());
    return 2;
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  const char* isa = k::cpu_isa_name(k::cpu_isa());
  std::printf("conv3x3 fp32 batch=%lld threads=%d kernels=%s\n", (long long)batch, threads, isa);
  for (const Shape& s : shapes_named(shapes)) {
    const auto x = torch::randn({batch, s.C, s.size, s.size});
    const auto w = torch::randn({s.K, s.C, 3, 3}) / std::sqrt(9.0 * s.C);
    const auto b = torch::randn({s.K});
    using concord::ops::conv3x3_reference;
    using concord::ops::conv3x3_winograd_forward;
    const double aten = cb::median_ms([&] { conv3x3_reference(x, w, b); }, iters);
    const double wino = cb::median_ms([&] { conv3x3_winograd_forward(x, w, b); }, iters);
    const double err =
        (conv3x3_winograd_forward(x, w, b) - conv3x3_reference(x, w, b)).abs().max().item<double>();
    const double gflop = 2.0 * batch * s.K * s.C * 9 * s.size * s.size * 1e-9;
    const bool picked = concord::ops::conv3x3_uses_winograd(x, w);
    const Parts p = time_parts(x, w, b, iters);
    // Forward and backward under autograd (a distillation step's case): conv3x3 where it picks
    // Winograd (its input gradient too), against the reference's ATen forward and backward.
    double train_aten = 0, train_ours = 0;
    {
      torch::AutoGradMode grad_on(true);
      const auto xg = x.clone().requires_grad_(true), wg = w.clone().requires_grad_(true);
      const auto bg = b.clone().requires_grad_(true);
      const auto dy = torch::randn({batch, s.K, s.size, s.size});
      auto step = [&](auto op) {
        xg.mutable_grad() = torch::Tensor();
        wg.mutable_grad() = torch::Tensor();
        bg.mutable_grad() = torch::Tensor();
        op(xg, wg, bg).backward(dy);
      };
      train_aten = cb::median_ms([&] { step(conv3x3_reference); }, iters);
      train_ours = cb::median_ms([&] { step(concord::ops::conv3x3); }, iters);
    }
    // The weight gradient alone: what a step that trains the filters of a frozen input pays.
    const auto dy = torch::randn({batch, s.K, s.size, s.size});
    const auto wz = torch::zeros({s.K, s.C, 3, 3});
    auto aten_dw = [&] {
      return std::get<1>(at::convolution_backward(dy, x, wz, c10::nullopt, {1, 1}, {1, 1}, {1, 1},
                                                  false, {0, 0}, 1, {false, true, false}));
    };
    using concord::ops::conv3x3_winograd_weight_grad;
    const double dw_aten = cb::median_ms([&] { aten_dw(); }, iters);
    const double dw_wino = cb::median_ms([&] { conv3x3_winograd_weight_grad(x, dy); }, iters);
    const auto dw_want = aten_dw();
    const double dw_err =
        ((conv3x3_winograd_weight_grad(x, dy) - dw_want).abs().max() / dw_want.abs().max())
            .item<double>();
    const int64_t T = batch * k::winograd_tiles(s.size) * k::winograd_tiles(s.size);
    const double product_gflops = 2.0 * 36 * s.K * s.C * T / p.products * 1e-6;
    const double grad_product_gflops = 2.0 * 36 * s.K * s.C * T / p.grad_products * 1e-6;
    std::printf(
        "%5lld -> %5lld at %3lldx%-3lld: aten %8.3f ms (%5.1f GFLOP/s) | winograd %8.3f ms | "
        "ratio %.2fx | picked %-3s | max abs diff %.2e\n"
        "        fwd+bwd: aten %.3f ms | conv3x3 %.3f ms | ratio %.2fx\n"
        "        winograd parts: filters %.3f, input %.3f, products %.3f (%.1f GFLOP/s), "
        "output %.3f ms\n"
        "        weight grad: aten %.3f ms | winograd %.3f ms | ratio %.2fx | max diff / max "
        "%.2e | parts: dy %.3f, products %.3f (%.1f GFLOP/s), filters %.3f ms\n",
        (long long)s.C, (long long)s.K, (long long)s.size, (long long)s.size, aten,
        gflop / aten * 1e3, wino, aten / wino, picked ? "yes" : "no", err, train_aten, train_ours,
        train_aten / train_ours, p.weights, p.input, p.products, product_gflops, p.output, dw_aten,
        dw_wino, dw_aten / dw_wino, dw_err, p.grad_output, p.grad_products, grad_product_gflops,
        p.grad_weights);
    std::printf(
        "{\"bench\": \"conv3x3\", \"batch\": %lld, \"in\": %lld, \"out\": %lld, \"size\": %lld, "
        "\"threads\": %d, \"kernels\": \"%s\", \"aten_ms\": %.4f, \"winograd_ms\": %.4f, "
        "\"ratio\": %.3f, \"picked\": %s, \"max_abs_diff\": %.3e, \"filters_ms\": %.4f, "
        "\"input_ms\": %.4f, \"products_ms\": %.4f, \"output_ms\": %.4f, "
        "\"fwd_bwd_aten_ms\": %.4f, \"fwd_bwd_conv3x3_ms\": %.4f, \"fwd_bwd_ratio\": %.3f, "
        "\"dw_aten_ms\": %.4f, \"dw_winograd_ms\": %.4f, \"dw_ratio\": %.3f, "
        "\"dw_rel_diff\": %.3e}\n",
        (long long)batch, (long long)s.C, (long long)s.K, (long long)s.size, threads, isa, aten,
        wino, aten / wino, picked ? "true" : "false", err, p.weights, p.input, p.products, p.output,
        train_aten, train_ours, train_aten / train_ours, dw_aten, dw_wino, dw_aten / dw_wino,
        dw_err);
  }
  return 0;
}
