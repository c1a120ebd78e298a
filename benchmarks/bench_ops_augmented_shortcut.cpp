// Augmented shortcut (PanGu-π Eq. 4, sum_i W2_i GELU(W1_i z + b1_i) + b2_i) forward + backward:
// the fused two-GEMM path (concord::ops::augmented_shortcut) vs the per-branch composite
// (augmented_shortcut_reference: T linear -> gelu -> linear chains under autograd), same run;
// then the fused bias + GELU pass between the GEMMs on its own, as memory traffic (GB/s) and,
// on a GPU, as a fraction of the device-to-device copy bandwidth (the HBM roofline).
//
//   bench_ops_augmented_shortcut [--rows 2048] [--dim 1024] [--hidden 64] [--branches 4]
//                                [--threads 2] [--iters 5] [--device cpu|cuda]
//                                [--dtype float|bfloat16|half] [--ew-elements 2^23 CPU, 2^27 GPU]
// The elementwise pass runs on [ew-elements / (T h), T h]: forward reads u and writes u and
// GELU(u) (3 passes of the tensor), backward reads u and dg and writes du and GELU(u) (4).
// The last line is one JSON object with every figure. With --device cuda and no device it
// prints a JSON line with "skipped" and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/ops/augmented_shortcut.h"
#include "../kernels/cpu/bias_gelu.h"

#ifdef CONCORD_CUDA_DISPATCH
#include <ATen/cuda/CUDAContext.h>
#include "../kernels/cuda/bias_gelu.cuh"
#endif

#include "bench_flags.h"
#include "bench_device.h"

namespace {

namespace cb = concord::bench;

// One fused bias + GELU forward / backward over u [rows, N] on the device.
void ew_forward(torch::Tensor& u, const torch::Tensor& bias, torch::Tensor& g) {
  const int64_t rows = u.size(0), N = u.size(1);
#ifdef CONCORD_CUDA_DISPATCH
  if (u.is_cuda()) {
    using concord::kernels::cuda::BiasGeluDType;
    const auto t = u.scalar_type() == torch::kBFloat16 ? BiasGeluDType::kBF16
                   : u.scalar_type() == torch::kHalf   ? BiasGeluDType::kF16
                                                       : BiasGeluDType::kF32;
    concord::kernels::cuda::bias_gelu_forward_cuda(u.data_ptr(), bias.data_ptr(), g.data_ptr(),
                                                   rows, N, t,
                                                   at::cuda::getCurrentCUDAStream().stream());
    return;
  }
#endif
  concord::kernels::cpu::bias_gelu_forward(u.data_ptr<float>(), bias.data_ptr<float>(),
                                           g.data_ptr<float>(), rows, N);
}
void ew_backward(const torch::Tensor& u, torch::Tensor& dg, torch::Tensor& g,
                 torch::Tensor& dbias) {
  const int64_t rows = u.size(0), N = u.size(1);
#ifdef CONCORD_CUDA_DISPATCH
  if (u.is_cuda()) {
    using concord::kernels::cuda::BiasGeluDType;
    const auto t = u.scalar_type() == torch::kBFloat16 ? BiasGeluDType::kBF16
                   : u.scalar_type() == torch::kHalf   ? BiasGeluDType::kF16
                                                       : BiasGeluDType::kF32;
    dbias.zero_();
    concord::kernels::cuda::bias_gelu_backward_cuda(
        u.data_ptr(), dg.data_ptr(), dg.data_ptr(), g.data_ptr(), dbias.data_ptr<float>(), rows,
        N, t, at::cuda::getCurrentCUDAStream().stream());
    return;
  }
#endif
  concord::kernels::cpu::bias_gelu_backward(u.data_ptr<float>(), dg.data_ptr<float>(),
                                            g.data_ptr<float>(), dbias.data_ptr<float>(), rows,
                                            N);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 2048, d = 1024, h = 64, T = 4, ew_elements = 0;
  int threads = 2, iters = 5;
  std::string device_name = "cpu", dtype_name = "float";
  cb::Flags flags("bench_ops_augmented_shortcut");
  flags.add("rows", &rows).add("dim", &d).add("hidden", &h).add("branches", &T)
      .add("threads", &threads).add("iters", &iters).add("device", &device_name)
      .add("dtype", &dtype_name).add("ew-elements", &ew_elements);
  if (!flags.parse(argc, argv)) return 2;
  torch::Device dev(torch::kCPU);
  if (!cb::parse_device(device_name, dev)) {
    std::printf(
        "{\"bench\": \"augmented_shortcut\", \"device\": \"%s\", \"skipped\": \"no CUDA device\"}\n",
        device_name.c_str());
    return 0;
  }
  at::set_num_threads(threads);
  const auto dtype = cb::parse_dtype(dtype_name);
  const auto opts = torch::dtype(dtype).device(dev);
  const int inner = dev.is_cuda() ? 10 : 1;
  torch::manual_seed(0);
  std::vector<torch::Tensor> in = {
      torch::randn({rows, d}, opts), torch::randn({T, h, d}, opts) * 0.03,
      torch::randn({T, h}, opts), torch::randn({T, d, h}, opts) * 0.1, torch::randn({T, d}, opts)};
  for (auto& t : in) t.requires_grad_(true);
  auto dout = torch::randn({rows, d}, opts);
  auto step = [&](auto op) {
    for (auto& t : in) t.mutable_grad() = torch::Tensor();
    op(in[0], in[1], in[2], in[3], in[4]).backward(dout);
  };
  const double composite = cb::median_ms_on(
      dev, [&] { step(concord::ops::augmented_shortcut_reference); }, iters, inner);
  const double fused =
      cb::median_ms_on(dev, [&] { step(concord::ops::augmented_shortcut); }, iters, inner);
  const bool is_fused = concord::ops::augmented_shortcut_is_fused(in[0]);

  // The elementwise pass alone (fp32 on the CPU: the CPU kernels have no bf16 build).
  const int64_t N = T * h;
  if (ew_elements <= 0) ew_elements = dev.is_cuda() ? (int64_t(1) << 27) : (int64_t(1) << 23);
  const int64_t ew_rows = std::max<int64_t>(1, ew_elements / N);
  const auto ew_opts = dev.is_cuda() ? opts : torch::dtype(torch::kFloat);
  auto u = torch::randn({ew_rows, N}, ew_opts), bias = torch::randn({N}, ew_opts);
  auto g = torch::empty_like(u), dg = torch::randn({ew_rows, N}, ew_opts);
  auto dbias = torch::empty({N}, ew_opts.dtype(torch::kFloat));
  // The forward adds bias into u in place on every call; the drift over a few hundred calls
  // changes nothing about the work done.
  const double ew_fwd = cb::median_ms_on(dev, [&] { ew_forward(u, bias, g); }, iters, inner);
  const double ew_bwd =
      cb::median_ms_on(dev, [&] { ew_backward(u, dg, g, dbias); }, iters, inner);
  const double ew_bytes = static_cast<double>(u.numel()) * u.element_size();
  const double fwd_gbs = 3 * ew_bytes / ew_fwd * 1e-6, bwd_gbs = 4 * ew_bytes / ew_bwd * 1e-6;
  const double copy_gbs = dev.is_cuda() ? cb::copy_bandwidth_gbs(dev) : 0.0;

  std::printf("augmented_shortcut %s %s z[%lld, %lld] T=%lld h=%lld threads=%d fused=%s\n",
              device_name.c_str(), dtype_name.c_str(), (long long)rows, (long long)d,
              (long long)T, (long long)h, threads, is_fused ? "yes" : "no");
  std::printf("fwd+bwd: composite %.3f ms | fused %.3f ms | ratio %.2fx\n", composite, fused,
              composite / fused);
  std::printf("bias+GELU pass [%lld, %lld]: fwd %.3f ms (%.1f GB/s) | bwd %.3f ms (%.1f GB/s)\n",
              (long long)ew_rows, (long long)N, ew_fwd, fwd_gbs, ew_bwd, bwd_gbs);
  if (copy_gbs > 0) {
    std::printf("copy bandwidth %.1f GB/s: bias+GELU fwd at %.0f%%, bwd at %.0f%% of it\n",
                copy_gbs, 100 * fwd_gbs / copy_gbs, 100 * bwd_gbs / copy_gbs);
  }
  std::printf(
      "{\"bench\": \"augmented_shortcut\", \"device\": \"%s\", \"dtype\": \"%s\", \"rows\": %lld, "
      "\"dim\": %lld, \"branches\": %lld, \"hidden\": %lld, \"threads\": %d, \"fused\": %s, "
      "\"fwd_bwd_composite_ms\": %.4f, \"fwd_bwd_fused_ms\": %.4f, \"fwd_bwd_ratio\": %.3f, "
      "\"bias_gelu_shape\": [%lld, %lld], \"bias_gelu_dtype\": \"%s\", "
      "\"bias_gelu_fwd_ms\": %.4f, \"bias_gelu_bwd_ms\": %.4f, \"bias_gelu_fwd_gbs\": %.1f, "
      "\"bias_gelu_bwd_gbs\": %.1f, \"copy_gbs\": %.1f, \"bias_gelu_fwd_fraction_of_copy\": %.3f, "
      "\"bias_gelu_bwd_fraction_of_copy\": %.3f}\n",
      device_name.c_str(), dtype_name.c_str(), (long long)rows, (long long)d, (long long)T,
      (long long)h, threads, is_fused ? "true" : "false", composite, fused, composite / fused,
      (long long)ew_rows, (long long)N, dev.is_cuda() ? dtype_name.c_str() : "float", ew_fwd,
      ew_bwd, fwd_gbs, bwd_gbs, copy_gbs, copy_gbs > 0 ? fwd_gbs / copy_gbs : 0.0,
      copy_gbs > 0 ? bwd_gbs / copy_gbs : 0.0);
  return 0;
}
