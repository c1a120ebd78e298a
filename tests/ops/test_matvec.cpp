// ops::matvec and kernels/cpu/gemv: the fused fp32 kernel against a double-precision reference
// over odd sizes (row counts around the 4-row groups and the thread split, input widths around
// the vector width), every ISA build, with and without bias; and the fallbacks.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "../../kernels/cpu/cpu_isa.h"
#include "concord/ops/fused.h"
#include "concord/ops/matvec.h"

namespace kcpu = concord::kernels::cpu;

TEST(Matvec, FusedKernelMatchesDoubleReferenceOnEveryBuild) {
  torch::manual_seed(11);
  for (auto cap : {kcpu::CpuIsa::kBaseline, kcpu::CpuIsa::kAvx2, kcpu::CpuIsa::kAvx512}) {
    const auto previous = kcpu::set_cpu_isa_cap(cap);
    for (int64_t out : {1, 3, 4, 5, 17, 1000, 4099}) {
      for (int64_t in : {1, 7, 8, 9, 64, 257}) {
        const at::Tensor w = torch::randn({out, in}), x = torch::randn({in}), b = torch::randn({out});
        ASSERT_TRUE(concord::ops::matvec_is_fused(w, x, b));
        for (bool with_bias : {true, false}) {
          const at::Tensor y = concord::ops::matvec(w, x, with_bias ? b : at::Tensor());
          at::Tensor ref = at::mv(w.to(at::kDouble), x.to(at::kDouble));
          if (with_bias) ref = ref + b.to(at::kDouble);
          const double tol = 1e-5 * std::sqrt(static_cast<double>(in)) + 1e-6;
          EXPECT_LT((y.to(at::kDouble) - ref).abs().max().item<double>(), tol)
              << kcpu::cpu_isa_name(kcpu::cpu_isa()) << " out " << out << " in " << in
              << " bias " << with_bias;
        }
      }
    }
    kcpu::set_cpu_isa_cap(previous);
  }
}

TEST(Matvec, SameResultAtAnyThreadCount) {
  torch::manual_seed(12);
  const at::Tensor w = torch::randn({2051, 300}), x = torch::randn({300});
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = concord::ops::matvec(w, x);
  at::set_num_threads(2);
  const at::Tensor two = concord::ops::matvec(w, x);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one, two));
}

TEST(Matvec, FallbacksAndBadShapes) {
  const at::Tensor w = torch::randn({6, 5}, torch::kDouble), x = torch::randn({5}, torch::kDouble);
  EXPECT_FALSE(concord::ops::matvec_is_fused(w, x));
  EXPECT_TRUE(torch::allclose(concord::ops::matvec(w, x), at::mv(w, x)));
  {
    concord::ops::FusedOpsGuard off(false);
    const at::Tensor wf = torch::randn({6, 5}), xf = torch::randn({5});
    EXPECT_FALSE(concord::ops::matvec_is_fused(wf, xf));
    EXPECT_TRUE(torch::allclose(concord::ops::matvec(wf, xf), at::mv(wf, xf)));
  }
  EXPECT_THROW(concord::ops::matvec(w, torch::randn({4}, torch::kDouble)), std::exception);
  EXPECT_THROW(concord::ops::matvec(w, x, torch::randn({5}, torch::kDouble)), std::exception);
}
