// GEGLU op: checks, dispatch to the fused CPU kernels, the autograd Function and the composite
// reference (see include/concord/ops/geglu.h).
#include "concord/ops/geglu.h"

#include <torch/autograd.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "../../kernels/cpu/geglu.h"
#include "output.h"

namespace concord::ops {
namespace {

void check_input(const char* op, const at::Tensor& p) {
  CONCORD_CHECK(p.defined(), op, ": p must be defined");
  CONCORD_CHECK(p.dim() >= 1 && p.size(-1) % 2 == 0, op,
                ": p must be [..., 2N] (hidden and gate halves), got last dim ",
                p.dim() >= 1 ? p.size(-1) : 0, " in ", p.sizes());
  CONCORD_CHECK(at::isFloatingType(p.scalar_type()), op, ": p must be floating point, got ",
                p.scalar_type());
}

bool fused_available(const at::Tensor& p) {
  return fused_ops_enabled() && p.device().is_cpu() &&
         (p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble);
}

std::vector<int64_t> half_sizes(const at::Tensor& p) {
  std::vector<int64_t> sizes(p.sizes().begin(), p.sizes().end());
  sizes.back() /= 2;
  return sizes;
}

at::Tensor forward_fused(const at::Tensor& p_in) {
  const at::Tensor p = p_in.contiguous();
  at::Tensor y = detail::empty_output(half_sizes(p), p.options());
  const int64_t N = p.size(-1) / 2;
  if (y.numel() == 0) return y;
  const int64_t rows = y.numel() / N;
  if (p.scalar_type() == at::kFloat) {
    kernels::cpu::geglu_forward(p.data_ptr<float>(), y.data_ptr<float>(), rows, N);
  } else {
    kernels::cpu::geglu_forward(p.data_ptr<double>(), y.data_ptr<double>(), rows, N);
  }
  return y;
}

at::Tensor backward_fused(const at::Tensor& dy_in, const at::Tensor& p_in) {
  const at::Tensor p = p_in.contiguous(), dy = dy_in.contiguous();
  at::Tensor dp = detail::empty_output_like(p);
  const int64_t N = p.size(-1) / 2;
  if (dy.numel() == 0) return dp;
  const int64_t rows = dy.numel() / N;
  if (p.scalar_type() == at::kFloat) {
    kernels::cpu::geglu_backward(p.data_ptr<float>(), dy.data_ptr<float>(), dp.data_ptr<float>(),
                                 rows, N);
  } else {
    kernels::cpu::geglu_backward(p.data_ptr<double>(), dy.data_ptr<double>(),
                                 dp.data_ptr<double>(), rows, N);
  }
  return dp;
}

// Saves only p: the backward recomputes GELU(gate) and its derivative in its one pass.
struct GegluFunction : public torch::autograd::Function<GegluFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& p) {
    ctx->save_for_backward({p});
    return forward_fused(p);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor p = ctx->get_saved_variables()[0];
    if (!grads[0].defined()) return {at::zeros_like(p)};
    return {backward_fused(grads[0], p).view(p.sizes())};
  }
};

}  // namespace

at::Tensor geglu_reference(const at::Tensor& p) {
  check_input("geglu_reference", p);
  const auto halves = p.chunk(2, -1);
  return halves[0] * at::gelu(halves[1]);
}

bool geglu_is_fused(const at::Tensor& p) { return p.defined() && fused_available(p); }

at::Tensor geglu(const at::Tensor& p) {
  check_input("geglu", p);
  if (!fused_available(p)) return geglu_reference(p);
  if (!at::GradMode::is_enabled() || !p.requires_grad()) return forward_fused(p);
  return GegluFunction::apply(p);
}

}  // namespace concord::ops
