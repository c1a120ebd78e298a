// SIAF (PanGu-π Eq. 7) fused kernels vs the composite ATen reference, forward and backward.
// Baseline: concord::ops::siaf_reference under autograd (what a PyTorch user writes:
// sum_i a[i] * silu(x + b[i])), measured in the same run on the same tensors.
//
//   bench_ops_siaf [--batch 8] [--seq 512] [--channels 2816] [--terms 2] [--threads 2]
//                  [--act silu] [--iters 10] [--dtype float|bfloat16|half] [--device cpu|cuda]
// Prints the median time of each side and the ratio composite / fused for
//   fwd+bwd  a fresh forward under autograd and its backward (what a training step pays),
//   fwd      the forward alone, without autograd,
//   bwd      the backward alone, re-run on one retained graph,
// the fused kernels' effective memory traffic (bytes read + written / time: x and y forward;
// dy, x and dx backward) and, as the last line, all of it as one JSON object. On the CPU it
// names the kernel build in use (baseline, avx2, avx512; CONCORD_CPU_ISA caps it); on a GPU it
// also measures the device-to-device copy bandwidth and reports the fused passes as a fraction
// of it (the HBM roofline of an elementwise kernel). Goal on the CPU: fwd+bwd >= 5x on
// (8, 512, 2816), n = 2, SiLU, 2 threads. With --device cuda and no device it prints a JSON
// line with "skipped" and exits 0.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "concord/ops/siaf.h"
#include "../kernels/cpu/cpu_isa.h"

#include "bench_flags.h"
#include "bench_device.h"

int main(int argc, char** argv) {
  namespace cb = concord::bench;
  int64_t batch = 8, seq = 512, channels = 2816, terms = 2;
  int threads = 2, iters = 10;
  std::string act_name = "silu", dtype_name = "float", device_name = "cpu";
  cb::Flags flags("bench_ops_siaf");
  flags.add("batch", &batch).add("seq", &seq).add("channels", &channels).add("terms", &terms)
      .add("threads", &threads).add("iters", &iters).add("act", &act_name)
      .add("dtype", &dtype_name).add("device", &device_name);
  if (!flags.parse(argc, argv)) return 2;
  torch::Device dev(torch::kCPU);
  if (!cb::parse_device(device_name, dev)) {
    std::printf("{\"bench\": \"siaf\", \"device\": \"%s\", \"skipped\": \"no CUDA device\"}\n",
                device_name.c_str());
    return 0;
  }
  at::set_num_threads(threads);
  const auto act = concord::ops::activation_from_name(act_name);
  const auto dtype = cb::parse_dtype(dtype_name);
  const auto opts = torch::dtype(dtype).device(dev);
  const int inner = dev.is_cuda() ? 20 : 1;  // GPU passes take microseconds: time batches
  torch::manual_seed(0);
  auto x = torch::randn({batch, seq, channels}, opts).requires_grad_(true);
  auto a = torch::randn({terms, channels}, opts).requires_grad_(true);
  auto b = torch::randn({terms, channels}, opts).requires_grad_(true);
  auto dy = torch::randn({batch, seq, channels}, opts);

  auto clear_grads = [&] {
    x.mutable_grad() = torch::Tensor();
    a.mutable_grad() = torch::Tensor();
    b.mutable_grad() = torch::Tensor();
  };
  auto step = [&](auto op) {
    clear_grads();
    torch::Tensor y = op(x, a, b, act);
    y.backward(dy);
  };
  auto backward_only = [&](auto op) {
    torch::Tensor y = op(x, a, b, act);
    return cb::median_ms_on(
        dev,
        [&] {
          clear_grads();
          y.backward(dy, /*retain_graph=*/true);
        },
        iters, inner);
  };
  const double composite =
      cb::median_ms_on(dev, [&] { step(concord::ops::siaf_reference); }, iters, inner);
  const double fused = cb::median_ms_on(dev, [&] { step(concord::ops::siaf); }, iters, inner);
  const double fwd_composite = cb::median_ms_on(
      dev, [&] { torch::NoGradGuard g; concord::ops::siaf_reference(x, a, b, act); }, iters,
      inner);
  const double fwd_fused = cb::median_ms_on(
      dev, [&] { torch::NoGradGuard g; concord::ops::siaf(x, a, b, act); }, iters, inner);
  const double bwd_composite = backward_only(concord::ops::siaf_reference);
  const double bwd_fused = backward_only(concord::ops::siaf);

  const double bytes = static_cast<double>(x.numel()) * x.element_size();
  const double fwd_gbs = 2 * bytes / fwd_fused * 1e-6, bwd_gbs = 3 * bytes / bwd_fused * 1e-6;
  const double copy_gbs = dev.is_cuda() ? cb::copy_bandwidth_gbs(dev) : 0.0;
  const char* isa = dev.is_cuda()
                        ? "cuda"
                        : concord::kernels::cpu::cpu_isa_name(concord::kernels::cpu::cpu_isa());
  const bool is_fused = concord::ops::siaf_is_fused(x);
  std::printf("siaf %s %s x[%lld, %lld, %lld] n=%lld device=%s threads=%d fused=%s kernels=%s\n",
              act_name.c_str(), dtype_name.c_str(), (long long)batch, (long long)seq,
              (long long)channels, (long long)terms, device_name.c_str(), threads,
              is_fused ? "yes" : "no", isa);
  std::printf("fwd+bwd: composite %.3f ms | fused %.3f ms | ratio %.2fx\n", composite, fused,
              composite / fused);
  std::printf("fwd    : composite %.3f ms | fused %.3f ms | ratio %.2fx | fused %.1f GB/s\n",
              fwd_composite, fwd_fused, fwd_composite / fwd_fused, fwd_gbs);
  std::printf("bwd    : composite %.3f ms | fused %.3f ms | ratio %.2fx | fused %.1f GB/s\n",
              bwd_composite, bwd_fused, bwd_composite / bwd_fused, bwd_gbs);
  if (copy_gbs > 0) {
    std::printf("copy bandwidth %.1f GB/s: fused fwd at %.0f%%, bwd at %.0f%% of it\n", copy_gbs,
                100 * fwd_gbs / copy_gbs, 100 * bwd_gbs / copy_gbs);
  }
  std::printf(
      "{\"bench\": \"siaf\", \"device\": \"%s\", \"dtype\": \"%s\", \"act\": \"%s\", "
      "\"shape\": [%lld, %lld, %lld], \"terms\": %lld, \"threads\": %d, \"fused\": %s, "
      "\"kernels\": \"%s\", \"fwd_bwd_composite_ms\": %.4f, \"fwd_bwd_fused_ms\": %.4f, "
      "\"fwd_bwd_ratio\": %.3f, \"fwd_composite_ms\": %.4f, \"fwd_fused_ms\": %.4f, "
      "\"fwd_ratio\": %.3f, \"bwd_composite_ms\": %.4f, \"bwd_fused_ms\": %.4f, "
      "\"bwd_ratio\": %.3f, \"fwd_fused_gbs\": %.1f, \"bwd_fused_gbs\": %.1f, "
      "\"copy_gbs\": %.1f, \"fwd_fraction_of_copy\": %.3f, \"bwd_fraction_of_copy\": %.3f}\n",
      device_name.c_str(), dtype_name.c_str(), act_name.c_str(), (long long)batch,
      (long long)seq, (long long)channels, (long long)terms, threads, is_fused ? "true" : "false",
      isa, composite, fused, composite / fused, fwd_composite, fwd_fused,
      fwd_composite / fwd_fused, bwd_composite, bwd_fused, bwd_composite / bwd_fused, fwd_gbs,
      bwd_gbs, copy_gbs, copy_gbs > 0 ? fwd_gbs / copy_gbs : 0.0,
      copy_gbs > 0 ? bwd_gbs / copy_gbs : 0.0);
  return 0;
}
