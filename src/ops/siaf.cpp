// SIAF op: checks, dtype/device dispatch to the fused kernels, the autograd Function and the
// composite reference (see include/concord/ops/siaf.h).
#include "concord/ops/siaf.h"

#include <algorithm>
#include <cctype>

#include <torch/autograd.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "../../kernels/cpu/siaf.h"
#include "output.h"

#ifdef CONCORD_CUDA_DISPATCH
#include <ATen/cuda/CUDAContext.h>
#include "../../kernels/cuda/siaf.cuh"
#endif

namespace concord::ops {

Activation activation_from_name(const std::string& name) {
  std::string key = name;
  std::transform(key.begin(), key.end(), key.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  if (key == "silu" || key == "swish") return Activation::SiLU;
  if (key == "gelu") return Activation::GELU;
  if (key == "relu") return Activation::ReLU;
  fail("unknown activation '", name, "': expected one of silu, gelu, relu");
}

const char* activation_name(Activation act) {
  switch (act) {
    case Activation::SiLU: return "silu";
    case Activation::GELU: return "gelu";
    case Activation::ReLU: return "relu";
  }
  return "?";
}

namespace {

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

void check_inputs(const char* op, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                  Activation act) {
  CONCORD_CHECK(x.defined() && a.defined() && b.defined(), op, ": x, a and b must be defined");
  CONCORD_CHECK(x.dim() >= 1, op, ": x must have a channel dim (x is [..., C]), got a scalar");
  CONCORD_CHECK(a.dim() == 2 && a.size(0) >= 1, op, ": a must be [n, C] with n >= 1, got ",
                shape_str(a));
  CONCORD_CHECK(a.size(1) == x.size(-1), op, ": a is ", shape_str(a), " but x has C = ",
                x.size(-1), " channels (x is ", shape_str(x), ")");
  CONCORD_CHECK(b.sizes() == a.sizes(), op, ": b must have a's shape ", shape_str(a), ", got ",
                shape_str(b));
  CONCORD_CHECK(at::isFloatingType(x.scalar_type()), op, ": x must be floating point, got ",
                x.scalar_type());
  CONCORD_CHECK(a.scalar_type() == x.scalar_type() && b.scalar_type() == x.scalar_type(), op,
                ": x, a and b must share a dtype, got ", x.scalar_type(), ", ", a.scalar_type(),
                ", ", b.scalar_type());
  CONCORD_CHECK(a.device() == x.device() && b.device() == x.device(), op,
                ": x, a and b must be on one device, got ", x.device(), ", ", a.device(), ", ",
                b.device());
  const auto code = static_cast<int32_t>(act);
  CONCORD_CHECK(code >= 0 && code <= 2, op, ": invalid activation code ", code);
}

at::Tensor apply_activation(const at::Tensor& u, Activation act) {
  switch (act) {
    case Activation::SiLU: return at::silu(u);
    case Activation::GELU: return at::gelu(u);
    case Activation::ReLU: return at::relu(u);
  }
  return u;
}

kernels::cpu::SiafActivation cpu_act(Activation act) {
  return static_cast<kernels::cpu::SiafActivation>(static_cast<int32_t>(act));
}

bool cpu_fused_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16;
}

#ifdef CONCORD_CUDA_DISPATCH
bool cuda_fused(const at::Tensor& x, int64_t n) {
  const auto t = x.scalar_type();
  return x.is_cuda() && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) &&
         n <= kernels::cuda::siaf_cuda_max_terms();
}
kernels::cuda::SiafDType cuda_dtype(at::ScalarType t) {
  if (t == at::kHalf) return kernels::cuda::SiafDType::kF16;
  if (t == at::kBFloat16) return kernels::cuda::SiafDType::kBF16;
  return kernels::cuda::SiafDType::kF32;
}
#endif

bool fused_available(const at::Tensor& x, int64_t n) {
  if (!fused_ops_enabled()) return false;
  if (x.device().is_cpu()) return cpu_fused_dtype(x.scalar_type());
#ifdef CONCORD_CUDA_DISPATCH
  return cuda_fused(x, n);
#else
  return false;
#endif
}

// Fused forward; inputs already checked and fused_available().
at::Tensor forward_fused(const at::Tensor& x_in, const at::Tensor& a_in, const at::Tensor& b_in,
                         Activation act) {
  const at::Tensor x = x_in.contiguous(), a = a_in.contiguous(), b = b_in.contiguous();
  at::Tensor y = detail::empty_output_like(x);
  const int64_t C = a.size(1), n = a.size(0);
  if (x.numel() == 0) return y;
  const int64_t rows = x.numel() / C;
#ifdef CONCORD_CUDA_DISPATCH
  if (x.is_cuda()) {
    kernels::cuda::siaf_forward_cuda(x.data_ptr(), a.data_ptr(), b.data_ptr(), y.data_ptr(),
                                     rows, C, n, static_cast<int32_t>(act),
                                     cuda_dtype(x.scalar_type()),
                                     at::cuda::getCurrentCUDAStream(x.get_device()).stream());
    return y;
  }
#endif
  switch (x.scalar_type()) {
    case at::kFloat:
      kernels::cpu::siaf_forward(x.data_ptr<float>(), a.data_ptr<float>(), b.data_ptr<float>(),
                                 y.data_ptr<float>(), rows, C, n, cpu_act(act));
      break;
    case at::kDouble:
      kernels::cpu::siaf_forward(x.data_ptr<double>(), a.data_ptr<double>(),
                                 b.data_ptr<double>(), y.data_ptr<double>(), rows, C, n,
                                 cpu_act(act));
      break;
    case at::kBFloat16:
      kernels::cpu::siaf_forward(x.data_ptr<at::BFloat16>(), a.data_ptr<at::BFloat16>(),
                                 b.data_ptr<at::BFloat16>(), y.data_ptr<at::BFloat16>(), rows,
                                 C, n, cpu_act(act));
      break;
    default:
      TORCH_INTERNAL_ASSERT(false, "siaf: no fused kernel for ", x.scalar_type());
  }
  return y;
}

SiafGrads backward_fused(const at::Tensor& dy_in, const at::Tensor& x_in, const at::Tensor& a_in,
                         const at::Tensor& b_in, Activation act) {
  const at::Tensor dy = dy_in.contiguous(), x = x_in.contiguous(), a = a_in.contiguous(),
                   b = b_in.contiguous();
  const int64_t C = a.size(1), n = a.size(0);
  SiafGrads g;
  g.dx = detail::empty_output_like(x);
  if (x.numel() == 0) {
    g.da = at::zeros_like(a);
    g.db = at::zeros_like(b);
    return g;
  }
  const int64_t rows = x.numel() / C;
#ifdef CONCORD_CUDA_DISPATCH
  if (x.is_cuda()) {
    at::Tensor acc = at::zeros({2, n, C}, x.options().dtype(at::kFloat));
    kernels::cuda::siaf_backward_cuda(
        dy.data_ptr(), x.data_ptr(), a.data_ptr(), b.data_ptr(), g.dx.data_ptr(),
        acc[0].data_ptr<float>(), acc[1].data_ptr<float>(), rows, C, n,
        static_cast<int32_t>(act), cuda_dtype(x.scalar_type()),
        at::cuda::getCurrentCUDAStream(x.get_device()).stream());
    g.da = acc[0].to(a.scalar_type());
    g.db = acc[1].to(a.scalar_type());
    return g;
  }
#endif
  g.da = at::empty_like(a);
  g.db = at::empty_like(b);
  switch (x.scalar_type()) {
    case at::kFloat:
      kernels::cpu::siaf_backward(dy.data_ptr<float>(), x.data_ptr<float>(), a.data_ptr<float>(),
                                  b.data_ptr<float>(), g.dx.data_ptr<float>(),
                                  g.da.data_ptr<float>(), g.db.data_ptr<float>(), rows, C, n,
                                  cpu_act(act));
      break;
    case at::kDouble:
      kernels::cpu::siaf_backward(dy.data_ptr<double>(), x.data_ptr<double>(),
                                  a.data_ptr<double>(), b.data_ptr<double>(),
                                  g.dx.data_ptr<double>(), g.da.data_ptr<double>(),
                                  g.db.data_ptr<double>(), rows, C, n, cpu_act(act));
      break;
    case at::kBFloat16:
      kernels::cpu::siaf_backward(dy.data_ptr<at::BFloat16>(), x.data_ptr<at::BFloat16>(),
                                  a.data_ptr<at::BFloat16>(), b.data_ptr<at::BFloat16>(),
                                  g.dx.data_ptr<at::BFloat16>(), g.da.data_ptr<at::BFloat16>(),
                                  g.db.data_ptr<at::BFloat16>(), rows, C, n, cpu_act(act));
      break;
    default:
      TORCH_INTERNAL_ASSERT(false, "siaf: no fused kernel for ", x.scalar_type());
  }
  return g;
}

// Saves only x, a and b: the backward recomputes sigma(x + b_i) in its single pass.
struct SiafFunction : public torch::autograd::Function<SiafFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& a, const at::Tensor& b, int64_t act) {
    ctx->save_for_backward({x, a, b});
    ctx->saved_data["act"] = act;
    return forward_fused(x, a, b, static_cast<Activation>(act));
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto act = static_cast<Activation>(ctx->saved_data["act"].toInt());
    at::Tensor dy = grads[0];
    if (!dy.defined()) dy = at::zeros_like(saved[0]);
    SiafGrads g = backward_fused(dy, saved[0], saved[1], saved[2], act);
    return {g.dx.view(saved[0].sizes()), g.da, g.db, at::Tensor()};
  }
};

}  // namespace

at::Tensor siaf_reference(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                          Activation act) {
  check_inputs("siaf_reference", x, a, b, act);
  at::Tensor y;
  for (int64_t i = 0; i < a.size(0); ++i) {
    at::Tensor term = a[i] * apply_activation(x + b[i], act);
    y = y.defined() ? y + term : term;
  }
  return y;
}

bool siaf_is_fused(const at::Tensor& x) { return x.defined() && fused_available(x, 2); }

at::Tensor siaf(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, Activation act) {
  check_inputs("siaf", x, a, b, act);
  if (!fused_available(x, a.size(0))) return siaf_reference(x, a, b, act);
  return SiafFunction::apply(x, a, b, static_cast<int64_t>(act));
}

at::Tensor siaf_forward(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                        Activation act) {
  check_inputs("siaf_forward", x, a, b, act);
  if (!fused_available(x, a.size(0))) {
    at::NoGradGuard no_grad;
    return siaf_reference(x, a, b, act);
  }
  return forward_fused(x, a, b, act);
}

SiafGrads siaf_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& a,
                        const at::Tensor& b, Activation act) {
  check_inputs("siaf_backward", x, a, b, act);
  CONCORD_CHECK(dy.defined() && dy.sizes() == x.sizes(), "siaf_backward: dy must have x's shape ",
                shape_str(x), ", got ", dy.defined() ? shape_str(dy) : std::string("undefined"));
  CONCORD_CHECK(dy.scalar_type() == x.scalar_type() && dy.device() == x.device(),
                "siaf_backward: dy must match x's dtype and device, got ", dy.scalar_type(), " on ",
                dy.device());
  if (fused_available(x, a.size(0))) {
    SiafGrads g = backward_fused(dy, x, a, b, act);
    g.dx = g.dx.view(x.sizes());
    return g;
  }
  // Composite: let autograd differentiate the reference.
  at::AutoGradMode enable(true);
  at::Tensor xv = x.detach().requires_grad_(true), av = a.detach().requires_grad_(true),
             bv = b.detach().requires_grad_(true);
  at::Tensor y = siaf_reference(xv, av, bv, act);
  auto grads = torch::autograd::grad({y}, {xv, av, bv}, {dy});
  return {grads[0], grads[1], grads[2]};
}

}  // namespace concord::ops
