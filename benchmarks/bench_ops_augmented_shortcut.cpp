// Augmented shortcut (PanGu-π Eq. 10, sum_i W2_i GELU(W1_i z + b1_i) + b2_i) forward + backward:
// the fused two-GEMM path (concord::ops::augmented_shortcut) vs the per-branch composite
// (augmented_shortcut_reference: T linear -> gelu -> linear chains under autograd), same run.
//
//   bench_ops_augmented_shortcut [--rows 2048] [--dim 1024] [--hidden 64] [--branches 4]
//                                [--threads 2] [--iters 5]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/ops/augmented_shortcut.h"

#include "bench_timing.h"

namespace {
using concord::bench::median_ms;
}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 2048, d = 1024, h = 64, T = 4;
  int threads = 2, iters = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    int64_t v = std::atoll(argv[i + 1]);
    if (k == "--rows") rows = v;
    else if (k == "--dim") d = v;
    else if (k == "--hidden") h = v;
    else if (k == "--branches") T = v;
    else if (k == "--threads") threads = static_cast<int>(v);
    else if (k == "--iters") iters = static_cast<int>(v);
    else {
      std::fprintf(stderr, "unknown flag %s\n", k.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  torch::manual_seed(0);
  std::vector<torch::Tensor> in = {torch::randn({rows, d}), torch::randn({T, h, d}) * 0.03,
                                   torch::randn({T, h}), torch::randn({T, d, h}) * 0.1,
                                   torch::randn({T, d})};
  for (auto& t : in) t.requires_grad_(true);
  auto dout = torch::randn({rows, d});
  auto step = [&](auto op) {
    for (auto& t : in) t.mutable_grad() = torch::Tensor();
    op(in[0], in[1], in[2], in[3], in[4]).backward(dout);
  };
  const double composite =
      median_ms([&] { step(concord::ops::augmented_shortcut_reference); }, iters);
  const double fused = median_ms([&] { step(concord::ops::augmented_shortcut); }, iters);
  std::printf("augmented_shortcut fp32 z[%lld, %lld] T=%lld h=%lld threads=%d\n",
              (long long)rows, (long long)d, (long long)T, (long long)h, threads);
  std::printf("fwd+bwd: composite %.1f ms | fused %.1f ms | ratio %.2fx\n", composite, fused,
              composite / fused);
  return 0;
}
