// Fused LM-head cross-entropy: checks, the chunked CPU path, its autograd Function and the
// composite reference (see include/concord/ops/linear_cross_entropy.h).
#include "concord/ops/linear_cross_entropy.h"

#include <algorithm>
#include <limits>
#include <vector>

#include <torch/autograd.h>

#include "../../kernels/cpu/cross_entropy.h"
#include "concord/core/error.h"
#include "concord/ops/fused.h"

namespace concord::ops {
namespace {

// Largest chunk buffer the automatic choice allocates: 2^26 floats (256 MiB).
constexpr int64_t kChunkElements = int64_t(1) << 26;
// Fewest tokens per chunk the automatic choice takes, buffer size permitting: narrower GEMMs
// lose efficiency (W h^T with 256 tokens ran ~5% slower than with 1024 on a 50257-class head).
constexpr int64_t kMinChunkTokens = 256;

void check_inputs(const char* op, const at::Tensor& hidden, const at::Tensor& weight,
                  const at::Tensor& targets, const LinearCrossEntropyOptions& o) {
  CONCORD_CHECK(hidden.defined() && weight.defined() && targets.defined(), op,
                ": hidden, weight and targets must be defined");
  CONCORD_CHECK(weight.dim() == 2, op, ": weight must be [V, d], got ", weight.sizes());
  CONCORD_CHECK(hidden.dim() >= 1 && hidden.size(-1) == weight.size(1), op, ": hidden is ",
                hidden.sizes(), " but weight is ", weight.sizes(), " (hidden must be [..., d])");
  CONCORD_CHECK(targets.sizes() == hidden.sizes().slice(0, hidden.dim() - 1), op,
                ": targets must be hidden's leading shape ",
                hidden.sizes().slice(0, hidden.dim() - 1), ", got ", targets.sizes());
  CONCORD_CHECK(targets.scalar_type() == at::kLong, op, ": targets must be int64, got ",
                targets.scalar_type());
  CONCORD_CHECK(at::isFloatingType(hidden.scalar_type()) &&
                    hidden.scalar_type() == weight.scalar_type(),
                op, ": hidden and weight must share a floating dtype, got ", hidden.scalar_type(),
                " and ", weight.scalar_type());
  CONCORD_CHECK(hidden.device() == weight.device() && targets.device() == hidden.device(), op,
                ": hidden, weight and targets must be on one device, got ", hidden.device(), ", ",
                weight.device(), ", ", targets.device());
  CONCORD_CHECK(o.reduction == at::Reduction::Mean || o.reduction == at::Reduction::Sum, op,
                ": reduction must be Mean or Sum");
  CONCORD_CHECK(o.chunk_tokens >= 0, op, ": chunk_tokens must be >= 0, got ", o.chunk_tokens);
}

// Targets flattened to a contiguous CPU int64 [N]; throws on one outside [0, V) that is not
// ignored. Returns the number of counted tokens.
int64_t check_targets(const char* op, const at::Tensor& flat, int64_t V, int64_t ignore_index) {
  const int64_t* t = flat.data_ptr<int64_t>();
  int64_t count = 0;
  for (int64_t n = 0; n < flat.numel(); ++n) {
    if (t[n] == ignore_index) continue;
    CONCORD_CHECK(t[n] >= 0 && t[n] < V, op, ": target ", t[n], " at position ", n,
                  " is outside [0, ", V, ") and is not the ignore_index ", ignore_index);
    ++count;
  }
  return count;
}

int64_t chunk_tokens(const LinearCrossEntropyOptions& o, int64_t N, int64_t V) {
  if (o.chunk_tokens > 0) return std::min(o.chunk_tokens, N);
  return std::max<int64_t>(1, std::min(N, std::max(kMinChunkTokens, kChunkElements / V)));
}

struct Fused {
  at::Tensor loss;  // fp32 scalar
  at::Tensor dh;    // [N, d] for a unit incoming gradient, when asked for
  at::Tensor dw;    // [V, d] likewise
};

// h [N, d], w [V, d] contiguous fp32 CPU; t [N] contiguous int64 CPU, already checked.
Fused run_fused(const at::Tensor& h, const at::Tensor& w, const at::Tensor& t,
                const LinearCrossEntropyOptions& o, int64_t count, bool want_dh, bool want_dw) {
  namespace k = kernels::cpu;
  const int64_t N = h.size(0), d = h.size(1), V = w.size(0);
  const int64_t chunk = chunk_tokens(o, N, V);
  const bool mean = o.reduction == at::Reduction::Mean;
  const float weight_of_token = mean ? (count > 0 ? 1.0f / static_cast<float>(count) : 0.0f) : 1.0f;
  at::Tensor buffer = at::empty({V * chunk}, h.options());
  std::vector<float> block_max(static_cast<size_t>(k::xent_blocks(V) * chunk));
  std::vector<float> lse(static_cast<size_t>(chunk)), target_logit(static_cast<size_t>(chunk));
  std::vector<float> scale(static_cast<size_t>(chunk));
  Fused out;
  if (want_dh) out.dh = at::empty({N, d}, h.options());
  if (want_dw) out.dw = at::empty({V, d}, w.options());
  const int64_t* target = t.data_ptr<int64_t>();
  double total = 0.0;  // in token order, so the loss does not depend on the thread count
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nc = std::min(chunk, N - n0);
    at::Tensor lt = buffer.narrow(0, 0, V * nc).view({V, nc});  // class-major logits
    const at::Tensor hc = h.narrow(0, n0, nc);
    at::mm_out(lt, w, hc.t());
    float* z = lt.data_ptr<float>();
    const int64_t* tc = target + n0;
    for (int64_t j = 0; j < nc; ++j) {  // read before the kernel overwrites them
      target_logit[j] = tc[j] == o.ignore_index ? 0.0f : z[tc[j] * nc + j];
    }
    k::xent_forward(z, V, nc, nc, block_max.data(), lse.data());
    for (int64_t j = 0; j < nc; ++j) {
      if (tc[j] != o.ignore_index) total += double(lse[j]) - double(target_logit[j]);
    }
    if (!want_dh && !want_dw) continue;
    for (int64_t j = 0; j < nc; ++j) scale[j] = tc[j] == o.ignore_index ? 0.0f : weight_of_token;
    k::xent_backward(z, V, nc, nc, block_max.data(), lse.data(), scale.data(), tc);
    if (want_dh) {  // dL/dh = dL/dz W
      at::Tensor rows = out.dh.narrow(0, n0, nc);
      at::mm_out(rows, lt.t(), w);
    }
    if (want_dw) {  // dL/dW += dL/dz^T h
      if (n0 == 0) {
        at::mm_out(out.dw, lt, hc);
      } else {
        out.dw.addmm_(lt, hc);
      }
    }
  }
  const double loss = mean ? (count > 0 ? total / static_cast<double>(count)
                                        : std::numeric_limits<double>::quiet_NaN())
                           : total;
  out.loss = at::scalar_tensor(loss, h.options());
  return out;
}

// The gradients come from the forward call (run_fused computes them alongside the loss); the
// backward hands them over, scaled by the incoming gradient. If a retained graph runs backward
// a second time, they have been handed over already and are computed again from the saved
// inputs.
struct LinearCrossEntropyFunction
    : public torch::autograd::Function<LinearCrossEntropyFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                            const at::Tensor& weight, const at::Tensor& targets,
                            int64_t ignore_index, int64_t reduction, int64_t chunk,
                            bool want_dh, bool want_dw) {
    LinearCrossEntropyOptions o;
    o.ignore_index = ignore_index;
    o.reduction = static_cast<at::Reduction::Reduction>(reduction);
    o.chunk_tokens = chunk;
    const at::Tensor h = hidden.reshape({-1, hidden.size(-1)}).contiguous();
    const at::Tensor w = weight.contiguous();
    const at::Tensor t = targets.reshape({-1}).contiguous();
    const int64_t count = check_targets("linear_cross_entropy", t, w.size(0), ignore_index);
    Fused f = run_fused(h, w, t, o, count, want_dh, want_dw);
    ctx->save_for_backward({hidden, weight, targets});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["count"] = count;
    ctx->saved_data["dh"] = f.dh;
    ctx->saved_data["dw"] = f.dw;
    return f.loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& hidden = saved[0];
    at::Tensor dh, dw;
    if (ctx->saved_data.count("dh")) {  // first backward: take the forward's gradients
      dh = ctx->saved_data["dh"].toOptional<at::Tensor>().value_or(at::Tensor());
      dw = ctx->saved_data["dw"].toOptional<at::Tensor>().value_or(at::Tensor());
      ctx->saved_data.erase("dh");
      ctx->saved_data.erase("dw");
    } else {
      at::NoGradGuard no_grad;
      LinearCrossEntropyOptions o;
      o.ignore_index = ctx->saved_data["ignore_index"].toInt();
      o.reduction = static_cast<at::Reduction::Reduction>(ctx->saved_data["reduction"].toInt());
      o.chunk_tokens = ctx->saved_data["chunk"].toInt();
      Fused f = run_fused(hidden.reshape({-1, hidden.size(-1)}).contiguous(),
                          saved[1].contiguous(), saved[2].reshape({-1}).contiguous(), o,
                          ctx->saved_data["count"].toInt(), ctx->needs_input_grad(0),
                          ctx->needs_input_grad(1));
      dh = f.dh;
      dw = f.dw;
    }
    torch::autograd::variable_list out(8);  // one per forward argument; only hidden, weight
    const at::Tensor& g = grads[0];
    if (!g.defined()) return out;
    // A unit gradient (loss.backward()) needs no pass over the [V, d] weight gradient.
    const bool unit = g.item<double>() == 1.0;
    if (dh.defined()) out[0] = (unit ? dh : dh * g).view(hidden.sizes());
    if (dw.defined()) out[1] = unit ? dw : dw * g;
    return out;
  }
};

}  // namespace

at::Tensor linear_cross_entropy_reference(const at::Tensor& hidden, const at::Tensor& weight,
                                          const at::Tensor& targets,
                                          const LinearCrossEntropyOptions& options) {
  check_inputs("linear_cross_entropy_reference", hidden, weight, targets, options);
  if (targets.device().is_cpu()) {
    check_targets("linear_cross_entropy_reference", targets.reshape({-1}).contiguous(),
                  weight.size(0), options.ignore_index);
  }
  at::Tensor logits = at::linear(hidden, weight).reshape({-1, weight.size(0)});
  if (at::elementSize(logits.scalar_type()) < 4) logits = logits.to(at::kFloat);  // fp16, bf16
  return at::cross_entropy_loss(logits, targets.reshape({-1}), {}, options.reduction,
                                options.ignore_index);
}

bool linear_cross_entropy_is_fused(const at::Tensor& hidden, const at::Tensor& weight) {
  return fused_ops_enabled() && hidden.defined() && weight.defined() && weight.dim() == 2 &&
         hidden.device().is_cpu() && weight.device().is_cpu() &&
         hidden.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
         hidden.numel() > 0 && weight.size(0) > 0;
}

at::Tensor linear_cross_entropy(const at::Tensor& hidden, const at::Tensor& weight,
                                const at::Tensor& targets,
                                const LinearCrossEntropyOptions& options) {
  check_inputs("linear_cross_entropy", hidden, weight, targets, options);
  // (check_inputs put targets on hidden's device.)
  if (!linear_cross_entropy_is_fused(hidden, weight)) {
    return linear_cross_entropy_reference(hidden, weight, targets, options);
  }
  const bool grad = at::GradMode::is_enabled();
  return LinearCrossEntropyFunction::apply(
      hidden, weight, targets, options.ignore_index, static_cast<int64_t>(options.reduction),
      options.chunk_tokens, grad && hidden.requires_grad(), grad && weight.requires_grad());
}

}  // namespace concord::ops
