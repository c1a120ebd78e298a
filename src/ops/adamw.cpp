// AdamW update: the fused CPU kernel or the ATen composite (see include/concord/ops/adamw.h).
#include "concord/ops/adamw.h"

#include <cmath>

#include <c10/core/GradMode.h>

#include "../../kernels/cpu/adamw.h"
#include "concord/core/error.h"
#include "concord/ops/fused.h"

namespace concord::ops {

bool adamw_update_is_fused(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& exp_avg,
                           const at::Tensor& exp_avg_sq) {
  auto cpu_f32 = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  return fused_ops_enabled() && cpu_f32(p) && cpu_f32(grad) && cpu_f32(exp_avg) &&
         cpu_f32(exp_avg_sq);
}

void adamw_update_(at::Tensor& p, const at::Tensor& grad, at::Tensor& exp_avg,
                   at::Tensor& exp_avg_sq, const AdamWStep& step) {
  CONCORD_CHECK(grad.sizes() == p.sizes() && exp_avg.sizes() == p.sizes() &&
                    exp_avg_sq.sizes() == p.sizes(),
                "adamw_update_: grad, exp_avg and exp_avg_sq must have the parameter's shape ",
                p.sizes(), ", got ", grad.sizes(), ", ", exp_avg.sizes(), ", ",
                exp_avg_sq.sizes());
  at::NoGradGuard no_grad;
  if (adamw_update_is_fused(p, grad, exp_avg, exp_avg_sq)) {
    kernels::cpu::AdamWScalars s;
    s.decay_factor = static_cast<float>(step.decay_factor);
    s.beta1 = static_cast<float>(step.beta1);
    s.beta2 = static_cast<float>(step.beta2);
    s.step_size = static_cast<float>(step.step_size);
    s.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(step.bias_correction2));
    s.eps = static_cast<float>(step.eps);
    kernels::cpu::adamw_update(p.data_ptr<float>(), grad.data_ptr<float>(),
                               exp_avg.data_ptr<float>(), exp_avg_sq.data_ptr<float>(), p.numel(),
                               s);
    return;
  }
  if (step.decay_factor != 1.0) p.mul_(step.decay_factor);
  exp_avg.mul_(step.beta1).add_(grad, 1.0 - step.beta1);
  exp_avg_sq.mul_(step.beta2).addcmul_(grad, grad, 1.0 - step.beta2);
  const at::Tensor denom =
      (exp_avg_sq.sqrt() / std::sqrt(step.bias_correction2)).add_(step.eps);
  p.addcdiv_(exp_avg, denom, -step.step_size);
}

}  // namespace concord::ops
