// Augmented shortcut op: checks, the two-GEMM fused CPU path with its autograd Function, and the
// composite reference (see include/concord/ops/augmented_shortcut.h).
#include "concord/ops/augmented_shortcut.h"

#include <torch/autograd.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "../../kernels/cpu/bias_gelu.h"
#include "output.h"

#ifdef CONCORD_CUDA_DISPATCH
#include <ATen/cuda/CUDAContext.h>
#include "../../kernels/cuda/bias_gelu.cuh"
#endif

namespace concord::ops {
namespace {

std::string dims(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void check_inputs(const at::Tensor& z, const at::Tensor& w1, const at::Tensor& b1,
                  const at::Tensor& w2, const at::Tensor& b2) {
  const char* op = "augmented_shortcut";
  CONCORD_CHECK(z.defined() && w1.defined() && b1.defined() && w2.defined() && b2.defined(), op,
                ": every input must be defined");
  CONCORD_CHECK(z.dim() >= 1, op, ": z must be [..., d], got a scalar");
  const int64_t d = z.size(-1);
  CONCORD_CHECK(w1.dim() == 3 && w1.size(0) >= 1 && w1.size(2) == d, op,
                ": w1 must be [T, h, d] with d = ", d, ", got ", dims(w1));
  const int64_t T = w1.size(0), h = w1.size(1);
  CONCORD_CHECK(b1.dim() == 2 && b1.size(0) == T && b1.size(1) == h, op, ": b1 must be [", T,
                ", ", h, "], got ", dims(b1));
  CONCORD_CHECK(w2.dim() == 3 && w2.size(0) == T && w2.size(1) == d && w2.size(2) == h, op,
                ": w2 must be [", T, ", ", d, ", ", h, "], got ", dims(w2));
  CONCORD_CHECK(b2.dim() == 2 && b2.size(0) == T && b2.size(1) == d, op, ": b2 must be [", T,
                ", ", d, "], got ", dims(b2));
  CONCORD_CHECK(at::isFloatingType(z.scalar_type()), op, ": z must be floating point, got ",
                z.scalar_type());
  for (const at::Tensor* t : {&w1, &b1, &w2, &b2}) {
    CONCORD_CHECK(t->scalar_type() == z.scalar_type(), op,
                  ": weights must have z's dtype ", z.scalar_type(), ", got ", t->scalar_type());
    CONCORD_CHECK(t->device() == z.device(), op, ": weights must be on z's device ", z.device(),
                  ", got ", t->device());
  }
}

bool fused_available(const at::Tensor& z) {
  if (!fused_ops_enabled()) return false;
  const auto t = z.scalar_type();
  if (z.device().is_cpu()) return t == at::kFloat || t == at::kDouble;
#ifdef CONCORD_CUDA_DISPATCH
  return z.is_cuda() && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16);
#else
  return false;
#endif
}

#ifdef CONCORD_CUDA_DISPATCH
kernels::cuda::BiasGeluDType cuda_dtype(at::ScalarType t) {
  if (t == at::kHalf) return kernels::cuda::BiasGeluDType::kF16;
  if (t == at::kBFloat16) return kernels::cuda::BiasGeluDType::kBF16;
  return kernels::cuda::BiasGeluDType::kF32;
}
#endif

// u <- u + b1 in place; returns GELU(u).
at::Tensor bias_gelu(at::Tensor& u, const at::Tensor& b1cat) {
  at::Tensor g = detail::empty_output_like(u);
  const int64_t rows = u.size(0), N = u.size(1);
#ifdef CONCORD_CUDA_DISPATCH
  if (u.is_cuda()) {
    kernels::cuda::bias_gelu_forward_cuda(u.data_ptr(), b1cat.data_ptr(), g.data_ptr(), rows, N,
                                          cuda_dtype(u.scalar_type()),
                                          at::cuda::getCurrentCUDAStream(u.get_device()).stream());
    return g;
  }
#endif
  if (u.scalar_type() == at::kFloat) {
    kernels::cpu::bias_gelu_forward(u.data_ptr<float>(), b1cat.data_ptr<float>(),
                                    g.data_ptr<float>(), rows, N);
  } else {
    kernels::cpu::bias_gelu_forward(u.data_ptr<double>(), b1cat.data_ptr<double>(),
                                    g.data_ptr<double>(), rows, N);
  }
  return g;
}

// dg <- dg * GELU'(u) in place; returns GELU(u) (recomputed) and the bias gradient.
std::pair<at::Tensor, at::Tensor> bias_gelu_backward(const at::Tensor& u, at::Tensor& dg) {
  at::Tensor g = detail::empty_output_like(u);
  const int64_t rows = u.size(0), N = u.size(1);
#ifdef CONCORD_CUDA_DISPATCH
  if (u.is_cuda()) {
    at::Tensor db = at::zeros({N}, u.options().dtype(at::kFloat));
    kernels::cuda::bias_gelu_backward_cuda(
        u.data_ptr(), dg.data_ptr(), dg.data_ptr(), g.data_ptr(), db.data_ptr<float>(), rows, N,
        cuda_dtype(u.scalar_type()), at::cuda::getCurrentCUDAStream(u.get_device()).stream());
    return {g, db.to(u.scalar_type())};
  }
#endif
  at::Tensor db = at::empty({N}, u.options());
  if (u.scalar_type() == at::kFloat) {
    kernels::cpu::bias_gelu_backward(u.data_ptr<float>(), dg.data_ptr<float>(),
                                     g.data_ptr<float>(), db.data_ptr<float>(), rows, N);
  } else {
    kernels::cpu::bias_gelu_backward(u.data_ptr<double>(), dg.data_ptr<double>(),
                                     g.data_ptr<double>(), db.data_ptr<double>(), rows, N);
  }
  return {g, db};
}

struct AugmentedShortcutFunction
    : public torch::autograd::Function<AugmentedShortcutFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z,
                            const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                            const at::Tensor& b2) {
    const int64_t T = w1.size(0), h = w1.size(1), d = w1.size(2);
    const at::Tensor z2 = z.reshape({-1, d}).contiguous();
    const at::Tensor w1cat = w1.reshape({T * h, d});                     // [T h, d]
    const at::Tensor w2cat = w2.permute({1, 0, 2}).reshape({d, T * h});  // [d, T h]
    const at::Tensor b1cat = b1.reshape({T * h}).contiguous();
    at::Tensor u = at::mm(z2, w1cat.t()).contiguous();  // [rows, T h]
    at::Tensor g = bias_gelu(u, b1cat);                 // u now holds the pre-activation
    at::Tensor out = at::addmm(b2.sum(0), g, w2cat.t());
    ctx->save_for_backward({z2, w1cat, w2cat, u});
    ctx->saved_data["T"] = T;
    return out.view(z.sizes());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor &z2 = s[0], &w1cat = s[1], &w2cat = s[2], &u = s[3];
    const int64_t T = ctx->saved_data["T"].toInt();
    const int64_t d = z2.size(1), h = w1cat.size(0) / T;
    at::Tensor dout = grads[0].reshape({-1, d});
    at::Tensor dg = at::mm(dout, w2cat).contiguous();  // [rows, T h]
    auto [g, db1] = bias_gelu_backward(u, dg);         // dg is now du
    at::Tensor dw2cat = at::mm(dout.t(), g);           // [d, T h]
    at::Tensor dw1cat = at::mm(dg.t(), z2);            // [T h, d]
    at::Tensor dz = at::mm(dg, w1cat);                 // [rows, d]
    at::Tensor db2 = dout.sum(0).unsqueeze(0).expand({T, d}).contiguous();
    return {dz.view(grads[0].sizes()), dw1cat.view({T, h, d}), db1.view({T, h}),
            dw2cat.view({d, T, h}).permute({1, 0, 2}).contiguous(), db2};
  }
};

}  // namespace

at::Tensor augmented_shortcut_reference(const at::Tensor& z, const at::Tensor& w1,
                                        const at::Tensor& b1, const at::Tensor& w2,
                                        const at::Tensor& b2) {
  check_inputs(z, w1, b1, w2, b2);
  at::Tensor out;
  for (int64_t i = 0; i < w1.size(0); ++i) {
    at::Tensor branch = at::linear(at::gelu(at::linear(z, w1[i], b1[i])), w2[i], b2[i]);
    out = out.defined() ? out + branch : branch;
  }
  return out;
}

bool augmented_shortcut_is_fused(const at::Tensor& z) { return z.defined() && fused_available(z); }

at::Tensor augmented_shortcut(const at::Tensor& z, const at::Tensor& w1, const at::Tensor& b1,
                              const at::Tensor& w2, const at::Tensor& b2) {
  check_inputs(z, w1, b1, w2, b2);
  if (!fused_available(z) || z.numel() == 0) return augmented_shortcut_reference(z, w1, b1, w2, b2);
  return AugmentedShortcutFunction::apply(z, w1, b1, w2, b2);
}

}  // namespace concord::ops
