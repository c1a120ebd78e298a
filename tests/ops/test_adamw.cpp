// ops::adamw_update_ and kernels/cpu/adamw: the fused fp32 update against the same update in
// double precision on every ISA build, over sizes around the vector widths and the task grain;
// bit-identical results at one and two threads; the composite fallback; shape errors.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "../../kernels/cpu/cpu_isa.h"
#include "concord/core/error.h"
#include "concord/ops/adamw.h"
#include "compare.h"
#include "concord/ops/fused.h"

namespace kcpu = concord::kernels::cpu;
using concord::ops::AdamWStep;
using concord::testing::rel_diff;

namespace {

AdamWStep third_step() {
  AdamWStep s;
  s.decay_factor = 1.0 - 1e-3 * 0.1;
  s.beta1 = 0.9;
  s.beta2 = 0.95;
  s.step_size = 1e-3 / (1.0 - std::pow(0.9, 3));
  s.bias_correction2 = 1.0 - std::pow(0.95, 3);
  s.eps = 1e-8;
  return s;
}

struct State {
  at::Tensor p, g, m, v;
  State clone() const { return {p.clone(), g.clone(), m.clone(), v.clone()}; }
  State to(at::ScalarType t) const { return {p.to(t), g.to(t), m.to(t), v.to(t)}; }
};

State random_state(int64_t n) {
  return {torch::randn({n}), torch::randn({n}) * 0.1, torch::randn({n}) * 0.01,
          torch::rand({n}) * 1e-3};
}

}  // namespace

TEST(AdamWUpdate, FusedMatchesDoubleOnEveryBuild) {
  torch::manual_seed(31);
  for (auto cap : {kcpu::CpuIsa::kBaseline, kcpu::CpuIsa::kAvx2, kcpu::CpuIsa::kAvx512}) {
    const auto previous = kcpu::set_cpu_isa_cap(cap);
    for (int64_t n : {1, 3, 4, 7, 8, 15, 16, 17, 33, 65537, 200003}) {
      const State s = random_state(n);
      State f = s.clone();
      ASSERT_TRUE(concord::ops::adamw_update_is_fused(f.p, f.g, f.m, f.v));
      concord::ops::adamw_update_(f.p, f.g, f.m, f.v, third_step());
      State d = s.to(at::kDouble);  // the composite, in double
      concord::ops::adamw_update_(d.p, d.g, d.m, d.v, third_step());
      const std::string where = std::string(kcpu::cpu_isa_name(kcpu::cpu_isa())) + " n " +
                                std::to_string(n);
      EXPECT_LT(rel_diff(f.m, d.m), 1e-6) << where;
      EXPECT_LT(rel_diff(f.v, d.v), 1e-6) << where;
      EXPECT_LT(rel_diff(f.p, d.p), 1e-6) << where;
      EXPECT_GT((f.p - s.p).abs().max().item<double>(), 1e-5) << where;  // it moved
    }
    kcpu::set_cpu_isa_cap(previous);
  }
}

TEST(AdamWUpdate, SameBitsAtAnyThreadCountAndCompositeFallback) {
  torch::manual_seed(32);
  const State s = random_state(300001);
  const int threads = at::get_num_threads();
  State one = s.clone(), two = s.clone();
  at::set_num_threads(1);
  concord::ops::adamw_update_(one.p, one.g, one.m, one.v, third_step());
  at::set_num_threads(2);
  concord::ops::adamw_update_(two.p, two.g, two.m, two.v, third_step());
  at::set_num_threads(threads);
  EXPECT_TRUE(one.p.equal(two.p));
  EXPECT_TRUE(one.m.equal(two.m));
  EXPECT_TRUE(one.v.equal(two.v));

  State c = s.clone();
  {
    concord::ops::FusedOpsGuard off(false);
    EXPECT_FALSE(concord::ops::adamw_update_is_fused(c.p, c.g, c.m, c.v));
    concord::ops::adamw_update_(c.p, c.g, c.m, c.v, third_step());
  }
  EXPECT_LT(rel_diff(c.p, one.p), 1e-6);

  State bad = s.clone();
  at::Tensor short_m = bad.m.narrow(0, 0, 10);
  EXPECT_THROW(concord::ops::adamw_update_(bad.p, bad.g, short_m, bad.v, third_step()),
               concord::Error);
}
