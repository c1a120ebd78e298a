#include "concord/ops/matvec.h"

#include "../../kernels/cpu/gemv.h"
#include "concord/core/error.h"
#include "concord/ops/fused.h"

namespace concord::ops {

bool matvec_is_fused(const at::Tensor& weight, const at::Tensor& x, const at::Tensor& bias) {
  auto cpu_f32 = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  return fused_ops_enabled() && cpu_f32(weight) && cpu_f32(x) && (!bias.defined() || cpu_f32(bias));
}

at::Tensor matvec(const at::Tensor& weight, const at::Tensor& x, const at::Tensor& bias) {
  CONCORD_CHECK(weight.dim() == 2 && x.dim() == 1 && x.size(0) == weight.size(1),
                "matvec: expected weight [out, in] and x [in], got ", weight.sizes(), " and ",
                x.sizes());
  CONCORD_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
                "matvec: bias must be [", weight.size(0), "], got ", bias.sizes());
  if (!matvec_is_fused(weight, x, bias)) {
    return bias.defined() ? at::addmv(bias, weight, x) : at::mv(weight, x);
  }
  at::Tensor y = at::empty({weight.size(0)}, x.options());
  kernels::cpu::gemv(weight.data_ptr<float>(), weight.size(0), weight.size(1), x.data_ptr<float>(),
                     bias.defined() ? bias.data_ptr<float>() : nullptr, y.data_ptr<float>());
  return y;
}

}  // namespace concord::ops
