// GEGLU (arXiv 2002.05202, Eq. 5; SDXL's feed-forward) fused CPU kernels vs the composite ATen
// reference, forward and backward. Baseline: concord::ops::geglu_reference under autograd
// (diffusers' GEGLU: hidden, gate = p.chunk(2, -1); hidden * gelu(gate)), measured in the same
// run on the same tensors.
//
//   bench_ops_geglu [--batch 2] [--tokens 1024] [--dim 640] [--threads 2] [--iters 10]
// p is [batch, tokens, 8 dim] (the projection to 2 x 4 dim of SDXL's feed-forward; the defaults
// are SDXL's middle level at 512 px, fp32). Prints the median time of each side and the ratio
// composite / fused for
//   fwd      the forward without autograd (inference: the U-Net forward's case),
//   fwd+bwd  a forward under autograd and its backward (a distillation step's case),
// the fused passes' memory traffic (bytes read + written / time) and, last, one JSON object.
#include <cstdio>
#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "concord/ops/geglu.h"
#include "../kernels/cpu/cpu_isa.h"

#include "bench_flags.h"
#include "bench_timing.h"

int main(int argc, char** argv) {
  int64_t batch = 2, tokens = 1024, dim = 640;
  int threads = 2, iters = 10;
  concord::bench::Flags flags("bench_ops_geglu");
  flags.add("batch", &batch).add("tokens", &tokens).add("dim", &dim).add("threads", &threads)
      .add("iters", &iters);
  if (!flags.parse(argc, argv)) return 2;
  at::set_num_threads(threads);
  torch::manual_seed(0);
  auto p = torch::randn({batch, tokens, 8 * dim}).requires_grad_(true);
  const auto dy = torch::randn({batch, tokens, 4 * dim});
  namespace cb = concord::bench;
  auto step = [&](auto op) {
    p.mutable_grad() = torch::Tensor();
    op(p).backward(dy);
  };
  auto forward = [&](auto op) {
    torch::NoGradGuard no_grad;
    return op(p);
  };
  const double fwd_composite = cb::median_ms([&] { forward(concord::ops::geglu_reference); }, iters);
  const double fwd_fused = cb::median_ms([&] { forward(concord::ops::geglu); }, iters);
  const double composite = cb::median_ms([&] { step(concord::ops::geglu_reference); }, iters);
  const double fused = cb::median_ms([&] { step(concord::ops::geglu); }, iters);

  const double p_bytes = static_cast<double>(p.numel()) * 4;
  const double fwd_gbs = 1.5 * p_bytes / fwd_fused * 1e-6;  // p read, y (half of p) written
  const char* isa = concord::kernels::cpu::cpu_isa_name(concord::kernels::cpu::cpu_isa());
  std::printf("geglu fp32 p[%lld, %lld, %lld] threads=%d fused=%s kernels=%s\n", (long long)batch,
              (long long)tokens, (long long)(8 * dim), threads,
              concord::ops::geglu_is_fused(p) ? "yes" : "no", isa);
  std::printf("fwd    : composite %.3f ms | fused %.3f ms | ratio %.2fx | fused %.1f GB/s\n",
              fwd_composite, fwd_fused, fwd_composite / fwd_fused, fwd_gbs);
  std::printf("fwd+bwd: composite %.3f ms | fused %.3f ms | ratio %.2fx\n", composite, fused,
              composite / fused);
  std::printf(
      "{\"bench\": \"geglu\", \"shape\": [%lld, %lld, %lld], \"threads\": %d, \"kernels\": \"%s\", "
      "\"fwd_composite_ms\": %.4f, \"fwd_fused_ms\": %.4f, \"fwd_ratio\": %.3f, "
      "\"fwd_bwd_composite_ms\": %.4f, \"fwd_bwd_fused_ms\": %.4f, \"fwd_bwd_ratio\": %.3f, "
      "\"fwd_fused_gbs\": %.1f}\n",
      (long long)batch, (long long)tokens, (long long)(8 * dim), threads, isa, fwd_composite,
      fwd_fused, fwd_composite / fwd_fused, composite, fused, composite / fused, fwd_gbs);
  return 0;
}
