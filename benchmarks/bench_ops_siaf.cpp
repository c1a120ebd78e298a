// SIAF (PanGu-π Eq. 7) fused CPU kernels vs the composite ATen reference, forward + backward.
// Baseline: concord::ops::siaf_reference under autograd (what a PyTorch user writes:
// sum_i a[i] * silu(x + b[i])), measured in the same run on the same tensors.
//
//   bench_ops_siaf [--batch 8] [--seq 512] [--channels 2816] [--terms 2] [--threads 2]
//                  [--act silu] [--iters 10] [--dtype float|bfloat16]
// Prints the median time of each and the ratio composite / fused (goal >= 5x on (8, 512, 2816),
// n = 2, SiLU, 2 threads).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/ops/siaf.h"

#include "bench_timing.h"

namespace {

using concord::bench::median_ms;

}  // namespace

int main(int argc, char** argv) {
  int64_t batch = 8, seq = 512, channels = 2816, terms = 2;
  int threads = 2, iters = 10;
  std::string act_name = "silu", dtype_name = "float";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--batch") batch = std::atoll(v.c_str());
    else if (k == "--seq") seq = std::atoll(v.c_str());
    else if (k == "--channels") channels = std::atoll(v.c_str());
    else if (k == "--terms") terms = std::atoll(v.c_str());
    else if (k == "--threads") threads = std::atoi(v.c_str());
    else if (k == "--iters") iters = std::atoi(v.c_str());
    else if (k == "--act") act_name = v;
    else if (k == "--dtype") dtype_name = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  const auto act = concord::ops::activation_from_name(act_name);
  const auto dtype = dtype_name == "bfloat16" ? torch::kBFloat16 : torch::kFloat;
  torch::manual_seed(0);
  auto x = torch::randn({batch, seq, channels}).to(dtype).requires_grad_(true);
  auto a = torch::randn({terms, channels}).to(dtype).requires_grad_(true);
  auto b = torch::randn({terms, channels}).to(dtype).requires_grad_(true);
  auto dy = torch::randn({batch, seq, channels}).to(dtype);

  auto step = [&](auto op) {
    x.mutable_grad() = torch::Tensor();
    a.mutable_grad() = torch::Tensor();
    b.mutable_grad() = torch::Tensor();
    torch::Tensor y = op(x, a, b, act);
    y.backward(dy);
  };
  const double composite = median_ms([&] { step(concord::ops::siaf_reference); }, iters);
  const double fused = median_ms([&] { step(concord::ops::siaf); }, iters);
  const double fwd_composite = median_ms(
      [&] { torch::NoGradGuard g; concord::ops::siaf_reference(x, a, b, act); }, iters);
  const double fwd_fused = median_ms(
      [&] { torch::NoGradGuard g; concord::ops::siaf(x, a, b, act); }, iters);

  std::printf("siaf %s %s x[%lld, %lld, %lld] n=%lld threads=%d fused=%s\n", act_name.c_str(),
              dtype_name.c_str(), (long long)batch, (long long)seq, (long long)channels,
              (long long)terms, threads, concord::ops::siaf_is_fused(x) ? "yes" : "no");
  std::printf("fwd+bwd: composite %.1f ms | fused %.1f ms | ratio %.2fx\n", composite, fused,
              composite / fused);
  std::printf("fwd    : composite %.1f ms | fused %.1f ms | ratio %.2fx\n", fwd_composite,
              fwd_fused, fwd_composite / fwd_fused);
  return 0;
}
