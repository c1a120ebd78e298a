// Attention op: checks, dtype/device dispatch to the fused kernels, the autograd Function and the
// composite reference (see include/concord/ops/attention.h).
#include "concord/ops/attention.h"

#include <cmath>
#include <string>

#include <torch/autograd.h>

#include "concord/core/error.h"
#include "concord/ops/fused.h"
#include "../../kernels/cpu/attention.h"
#include "output.h"

#ifdef CONCORD_CUDA_DISPATCH
#include <ATen/cuda/CUDAContext.h>
#include "../../kernels/cuda/attention.cuh"
#endif

namespace concord::ops {
namespace {

namespace kcpu = kernels::cpu;

std::string shape_str(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::string s = "[";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + std::to_string(t.size(d));
  return s + "]";
}

struct Resolved {
  bool causal;
  double scale;
  at::Tensor seg;  // int64 contiguous [B, Tk] on q's device, or undefined
};

Resolved check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, const AttentionOptions& o) {
  CONCORD_CHECK(q.defined() && k.defined() && v.defined(), op, ": q, k and v must be defined");
  CONCORD_CHECK(q.dim() == 4, op, ": q must be [B, Hq, Tq, D], got ", shape_str(q));
  CONCORD_CHECK(k.dim() == 4, op, ": k must be [B, Hkv, Tk, D], got ", shape_str(k));
  CONCORD_CHECK(v.sizes() == k.sizes(), op, ": v must have k's shape ", shape_str(k), ", got ",
                shape_str(v));
  CONCORD_CHECK(k.size(0) == q.size(0), op, ": q has batch ", q.size(0), " but k has ",
                k.size(0), " (q ", shape_str(q), ", k ", shape_str(k), ")");
  CONCORD_CHECK(k.size(3) == q.size(3), op, ": q has head dim ", q.size(3), " but k has ",
                k.size(3));
  CONCORD_CHECK(q.size(3) >= 1, op, ": head dim must be >= 1");
  CONCORD_CHECK(k.size(1) >= 1 && q.size(1) % k.size(1) == 0, op, ": Hq = ", q.size(1),
                " must be a multiple of Hkv = ", k.size(1), " (grouped-query attention)");
  CONCORD_CHECK(k.size(2) >= 1, op, ": k and v need at least one key, got Tk = 0");
  CONCORD_CHECK(at::isFloatingType(q.scalar_type()), op, ": q must be floating point, got ",
                q.scalar_type());
  CONCORD_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
                ": q, k and v must share a dtype, got ", q.scalar_type(), ", ", k.scalar_type(),
                ", ", v.scalar_type());
  CONCORD_CHECK(k.device() == q.device() && v.device() == q.device(), op,
                ": q, k and v must be on one device, got ", q.device(), ", ", k.device(), ", ",
                v.device());
  const int64_t Tq = q.size(2), Tk = k.size(2);
  Resolved r;
  r.causal = o.causal();
  r.scale = o.scale().has_value() ? *o.scale() : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  CONCORD_CHECK(std::isfinite(r.scale), op, ": scale must be finite, got ", r.scale);
  CONCORD_CHECK(!r.causal || Tq <= Tk, op, ": causal attention needs Tq <= Tk (queries are the ",
                "last Tq of Tk positions), got Tq = ", Tq, ", Tk = ", Tk);
  if (o.segment_ids().defined()) {
    const at::Tensor& s = o.segment_ids();
    CONCORD_CHECK(s.dim() == 2 && s.size(0) == q.size(0) && s.size(1) == Tk, op,
                  ": segment_ids must be [B, Tk] = [", q.size(0), ", ", Tk, "], got ",
                  shape_str(s));
    CONCORD_CHECK(!at::isFloatingType(s.scalar_type()) && s.scalar_type() != at::kBool, op,
                  ": segment_ids must be integers, got ", s.scalar_type());
    CONCORD_CHECK(Tq <= Tk, op, ": segment_ids need Tq <= Tk, got Tq = ", Tq, ", Tk = ", Tk);
    r.seg = s.to(q.device(), at::kLong).contiguous();
  }
  return r;
}

// Allowed-key mask [B or 1, 1, Tq, Tk] for the composite, or undefined when all keys are.
at::Tensor reference_mask(const at::Tensor& q, int64_t Tk, const Resolved& r) {
  const int64_t Tq = q.size(2), offset = Tk - Tq;
  at::Tensor mask;
  const auto long_opts = q.options().dtype(at::kLong);
  at::Tensor qpos = at::arange(Tq, long_opts).add_(offset).view({Tq, 1});
  at::Tensor kpos = at::arange(Tk, long_opts).view({1, Tk});
  if (r.causal) mask = (kpos <= qpos).view({1, 1, Tq, Tk});
  if (r.seg.defined()) {
    at::Tensor sq = r.seg.narrow(1, offset, Tq).unsqueeze(2);  // [B, Tq, 1]
    at::Tensor sk = r.seg.unsqueeze(1);                         // [B, 1, Tk]
    at::Tensor same = (sq == sk) & (sq != 0);
    at::Tensor diag = (qpos == kpos).unsqueeze(0);
    at::Tensor seg_ok = (same | diag).unsqueeze(1);  // [B, 1, Tq, Tk]
    mask = mask.defined() ? (mask & seg_ok) : seg_ok;
  }
  return mask;
}

at::Tensor reference_impl(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const Resolved& r) {
  const int64_t G = q.size(1) / k.size(1);
  at::Tensor kk = G == 1 ? k : k.repeat_interleave(G, 1);
  at::Tensor vv = G == 1 ? v : v.repeat_interleave(G, 1);
  at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)) * r.scale;
  at::Tensor mask = reference_mask(q, k.size(2), r);
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -INFINITY);
  return at::matmul(at::softmax(scores, -1), vv);
}

bool cpu_fused_dtype(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

#ifdef CONCORD_CUDA_DISPATCH
namespace kcuda = kernels::cuda;
bool cuda_fused(const at::Tensor& q) {
  const auto t = q.scalar_type();
  return q.is_cuda() && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) &&
         q.size(-1) <= kcuda::attention_cuda_max_head_dim();
}
kcuda::AttentionDType cuda_dtype(at::ScalarType t) {
  if (t == at::kHalf) return kcuda::AttentionDType::kF16;
  if (t == at::kBFloat16) return kcuda::AttentionDType::kBF16;
  return kcuda::AttentionDType::kF32;
}
#endif

bool fused_available(const at::Tensor& q) {
  if (!fused_ops_enabled()) return false;
  if (q.device().is_cpu()) return cpu_fused_dtype(q.scalar_type());
#ifdef CONCORD_CUDA_DISPATCH
  return q.dim() == 4 && cuda_fused(q);
#else
  return false;
#endif
}

// The kernels read any [B, H, T, D] view whose last dim is contiguous.
at::Tensor unit_last_stride(const at::Tensor& t) {
  return (t.size(3) <= 1 || t.stride(3) == 1) ? t : t.contiguous();
}
kcpu::AttentionStrides cpu_strides(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}
kcpu::AttentionDims cpu_dims(const at::Tensor& q, const at::Tensor& k, const Resolved& r) {
  kcpu::AttentionDims d;
  d.batch = q.size(0);
  d.q_heads = q.size(1);
  d.kv_heads = k.size(1);
  d.q_len = q.size(2);
  d.kv_len = k.size(2);
  d.head_dim = q.size(3);
  d.causal = r.causal;
  d.scale = r.scale;
  d.segment_ids = r.seg.defined() ? r.seg.data_ptr<int64_t>() : nullptr;
  return d;
}

#ifdef CONCORD_CUDA_DISPATCH
kcuda::AttentionCudaStrides cuda_strides(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2)};
}
kcuda::AttentionCudaDims cuda_dims(const at::Tensor& q, const at::Tensor& k, const Resolved& r) {
  kcuda::AttentionCudaDims d;
  d.batch = q.size(0);
  d.q_heads = q.size(1);
  d.kv_heads = k.size(1);
  d.q_len = q.size(2);
  d.kv_len = k.size(2);
  d.head_dim = q.size(3);
  d.causal = r.causal;
  d.scale = static_cast<float>(r.scale);
  d.segment_ids = r.seg.defined() ? r.seg.data_ptr<int64_t>() : nullptr;
  return d;
}
#endif

// Fused forward; inputs checked and fused_available(q). Returns {} (undefined out) when the
// CUDA launcher declines the problem, so the caller falls back to the composite.
AttentionOutput forward_fused(const at::Tensor& q_in, const at::Tensor& k_in,
                              const at::Tensor& v_in, const Resolved& r) {
  const at::Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
                   v = unit_last_stride(v_in);
  AttentionOutput o;
  o.out = detail::empty_output(q.sizes(),
                               q.options().memory_format(at::MemoryFormat::Contiguous));
  const auto lse_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  o.lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(lse_type));
#ifdef CONCORD_CUDA_DISPATCH
  if (q.is_cuda()) {
    if (o.out.numel() == 0) return o;
    const bool ran = kcuda::attention_forward_cuda(
        q.data_ptr(), cuda_strides(q), k.data_ptr(), cuda_strides(k), v.data_ptr(),
        cuda_strides(v), o.out.data_ptr(), o.lse.data_ptr<float>(), cuda_dims(q, k, r),
        cuda_dtype(q.scalar_type()), at::cuda::getCurrentCUDAStream(q.get_device()).stream());
    return ran ? o : AttentionOutput{};
  }
#endif
  const auto dims = cpu_dims(q, k, r);
  if (q.scalar_type() == at::kFloat) {
    kcpu::attention_forward(q.data_ptr<float>(), cpu_strides(q), k.data_ptr<float>(),
                            cpu_strides(k), v.data_ptr<float>(), cpu_strides(v),
                            o.out.data_ptr<float>(), o.lse.data_ptr<float>(), dims);
  } else {
    TORCH_INTERNAL_ASSERT(q.scalar_type() == at::kDouble, "attention: no fused kernel for ",
                          q.scalar_type());
    kcpu::attention_forward(q.data_ptr<double>(), cpu_strides(q), k.data_ptr<double>(),
                            cpu_strides(k), v.data_ptr<double>(), cpu_strides(v),
                            o.out.data_ptr<double>(), o.lse.data_ptr<double>(), dims);
  }
  return o;
}

// Composite backward: autograd through the reference.
AttentionGrads backward_composite(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const Resolved& r) {
  at::AutoGradMode enable(true);
  at::Tensor qv = q.detach().requires_grad_(true), kv = k.detach().requires_grad_(true),
             vv = v.detach().requires_grad_(true);
  at::Tensor out = reference_impl(qv, kv, vv, r);
  auto g = torch::autograd::grad({out}, {qv, kv, vv}, {dout});
  return {g[0], g[1], g[2]};
}

AttentionGrads backward_fused(const at::Tensor& dout_in, const at::Tensor& q_in,
                              const at::Tensor& k_in, const at::Tensor& v_in,
                              const at::Tensor& out_in, const at::Tensor& lse_in,
                              const Resolved& r) {
  const at::Tensor q = unit_last_stride(q_in), k = unit_last_stride(k_in),
                   v = unit_last_stride(v_in), dout = unit_last_stride(dout_in);
  const at::Tensor out = out_in.contiguous(), lse = lse_in.contiguous();
  AttentionGrads g;
#ifdef CONCORD_CUDA_DISPATCH
  if (q.is_cuda()) {
    const auto f32 = q.options().dtype(at::kFloat);
    at::Tensor dq = at::zeros(q.sizes(), f32), dk = at::zeros(k.sizes(), f32),
               dv = at::zeros(v.sizes(), f32);
    if (q.numel() > 0) {
      const bool ran = kcuda::attention_backward_cuda(
          dout.data_ptr(), cuda_strides(dout), q.data_ptr(), cuda_strides(q), k.data_ptr(),
          cuda_strides(k), v.data_ptr(), cuda_strides(v), out.data_ptr(),
          lse.data_ptr<float>(), dq.data_ptr<float>(), dk.data_ptr<float>(),
          dv.data_ptr<float>(), cuda_dims(q, k, r), cuda_dtype(q.scalar_type()),
          at::cuda::getCurrentCUDAStream(q.get_device()).stream());
      if (!ran) return backward_composite(dout_in, q_in, k_in, v_in, r);
    }
    return {dq.to(q.scalar_type()), dk.to(q.scalar_type()), dv.to(q.scalar_type())};
  }
#endif
  const auto cont = q.options().memory_format(at::MemoryFormat::Contiguous);
  g.dq = detail::empty_output(q.sizes(), cont);
  g.dk = detail::empty_output(k.sizes(), cont);
  g.dv = detail::empty_output(v.sizes(), cont);
  const auto dims = cpu_dims(q, k, r);
  if (q.scalar_type() == at::kFloat) {
    kcpu::attention_backward(dout.data_ptr<float>(), cpu_strides(dout), q.data_ptr<float>(),
                             cpu_strides(q), k.data_ptr<float>(), cpu_strides(k),
                             v.data_ptr<float>(), cpu_strides(v), out.data_ptr<float>(),
                             lse.data_ptr<float>(), g.dq.data_ptr<float>(),
                             g.dk.data_ptr<float>(), g.dv.data_ptr<float>(), dims);
  } else {
    TORCH_INTERNAL_ASSERT(q.scalar_type() == at::kDouble, "attention: no fused kernel for ",
                          q.scalar_type());
    kcpu::attention_backward(dout.data_ptr<double>(), cpu_strides(dout), q.data_ptr<double>(),
                             cpu_strides(q), k.data_ptr<double>(), cpu_strides(k),
                             v.data_ptr<double>(), cpu_strides(v), out.data_ptr<double>(),
                             lse.data_ptr<double>(), g.dq.data_ptr<double>(),
                             g.dk.data_ptr<double>(), g.dv.data_ptr<double>(), dims);
  }
  return g;
}

// Saves q, k, v, O and the logsumexp (O(T) memory); the backward recomputes P from them.
struct AttentionFunction : public torch::autograd::Function<AttentionFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const Resolved& r) {
    AttentionOutput o = forward_fused(q, k, v, r);
    if (!o.out.defined()) {  // the CUDA launcher declined: composite forward, composite backward
      at::NoGradGuard no_grad;
      o.out = reference_impl(q, k, v, r);
    }
    std::vector<at::Tensor> saved{q, k, v, o.out, o.lse};
    if (r.seg.defined()) saved.push_back(r.seg);
    ctx->save_for_backward(saved);
    ctx->saved_data["causal"] = r.causal;
    ctx->saved_data["scale"] = r.scale;
    return o.out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    Resolved r{ctx->saved_data["causal"].toBool(), ctx->saved_data["scale"].toDouble(),
               s.size() > 5 ? s[5] : at::Tensor()};
    at::Tensor dout = grads[0];
    if (!dout.defined()) dout = at::zeros_like(s[3]);
    AttentionGrads g = s[4].defined() ? backward_fused(dout, s[0], s[1], s[2], s[3], s[4], r)
                                      : backward_composite(dout, s[0], s[1], s[2], r);
    return {g.dq, g.dk, g.dv, at::Tensor()};
  }
};

}  // namespace

at::Tensor attention_reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const AttentionOptions& options) {
  const Resolved r = check_inputs("attention_reference", q, k, v, options);
  return reference_impl(q, k, v, r);
}

bool attention_is_fused(const at::Tensor& q) { return q.defined() && fused_available(q); }

at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const AttentionOptions& options) {
  const Resolved r = check_inputs("attention", q, k, v, options);
  if (!fused_available(q)) return reference_impl(q, k, v, r);
  return AttentionFunction::apply(q, k, v, r);
}

AttentionOutput attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const AttentionOptions& options) {
  const Resolved r = check_inputs("attention_forward", q, k, v, options);
  at::NoGradGuard no_grad;
  if (fused_available(q)) {
    AttentionOutput o = forward_fused(q, k, v, r);
    if (o.out.defined()) return o;
  }
  // Composite: out from the reference, lse from the same masked scores.
  const int64_t G = q.size(1) / k.size(1);
  at::Tensor kk = G == 1 ? k : k.repeat_interleave(G, 1);
  at::Tensor scores = at::matmul(q, kk.transpose(-2, -1)) * r.scale;
  at::Tensor mask = reference_mask(q, k.size(2), r);
  if (mask.defined()) scores = scores.masked_fill(mask.logical_not(), -INFINITY);
  const auto lse_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return {reference_impl(q, k, v, r), at::logsumexp(scores.to(lse_type), -1)};
}

AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q,
                                  const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                  const at::Tensor& lse, const AttentionOptions& options) {
  const Resolved r = check_inputs("attention_backward", q, k, v, options);
  CONCORD_CHECK(dout.defined() && dout.sizes() == q.sizes(),
                "attention_backward: dout must have q's shape ", shape_str(q), ", got ",
                shape_str(dout));
  CONCORD_CHECK(out.defined() && out.sizes() == q.sizes(),
                "attention_backward: out must have q's shape ", shape_str(q), ", got ",
                shape_str(out));
  CONCORD_CHECK(lse.defined() && lse.dim() == 3 && lse.size(0) == q.size(0) &&
                    lse.size(1) == q.size(1) && lse.size(2) == q.size(2),
                "attention_backward: lse must be [B, Hq, Tq] = [", q.size(0), ", ", q.size(1),
                ", ", q.size(2), "], got ", shape_str(lse));
  CONCORD_CHECK(dout.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type() &&
                    dout.device() == q.device() && out.device() == q.device() &&
                    lse.device() == q.device(),
                "attention_backward: dout and out must match q's dtype and device (", q.scalar_type(),
                " on ", q.device(), "), got dout ", dout.scalar_type(), " on ", dout.device(),
                ", out ", out.scalar_type(), " on ", out.device());
  at::NoGradGuard no_grad;
  if (!fused_available(q)) return backward_composite(dout, q, k, v, r);
  const auto lse_type = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return backward_fused(dout, q, k, v, out, lse.to(lse_type), r);
}

at::Tensor attention_decode(const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, const AttentionOptions& options) {
  const Resolved r = check_inputs("attention_decode", q, k_cache, v_cache, options);
  CONCORD_CHECK(q.size(2) == 1, "attention_decode: q must hold one new token per row ",
                "([B, Hq, 1, D]), got ", shape_str(q), "; use attention() for Tq > 1");
  at::NoGradGuard no_grad;
  if (fused_available(q)) {
    AttentionOutput o = forward_fused(q, k_cache, v_cache, r);
    if (o.out.defined()) return o.out;
  }
  return reference_impl(q, k_cache, v_cache, r);
}

}  // namespace concord::ops
