#include "concord/nn/attention.h"
#include "concord/nn/feature_capture.h"
#include "concord/nn/linear.h"
#include "concord/ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include "concord/core/error.h"

namespace concord::nn {

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Yarn: return "yarn";
    case RopeType::Llama3: return "llama3";
  }
  return "?";
}

std::optional<RopeType> parse_rope_type(const std::string& name) {
  for (RopeType t : {RopeType::Default, RopeType::Linear, RopeType::Dynamic, RopeType::Yarn,
                     RopeType::Llama3}) {
    if (name == rope_type_name(t)) return t;
  }
  return std::nullopt;
}

namespace {

// b^(-2i/D) for i < D/2, in fp32: arange in fp32 divided by D, the scalar base raised to it
// (pow(Scalar, Tensor) computes in the tensor's fp32), then the reciprocal, as transformers'
// `1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))` does.
at::Tensor default_inverse_frequencies(int64_t head_dim, double theta, c10::Device device) {
  const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
  const at::Tensor exponents = at::arange(0, head_dim, 2, fopts) / static_cast<double>(head_dim);
  return at::reciprocal(at::pow(theta, exponents));
}

// YaRN's get_mscale: 0.1 * m * ln(s) + 1 for s > 1.
double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

// The (fractional) dimension index whose wavelength turns `rotations` times over `context`.
double yarn_correction_dim(double rotations, int64_t dim, double base, double context) {
  return (static_cast<double>(dim) * std::log(context / (rotations * 2 * M_PI))) /
         (2 * std::log(base));
}

}  // namespace

std::pair<at::Tensor, double> rope_inverse_frequencies(int64_t head_dim, double theta,
                                                       const RopeScaling& sc,
                                                       int64_t max_position, c10::Device device) {
  TORCH_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope: head_dim must be even, got ", head_dim);
  const int64_t dim = head_dim;
  const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
  switch (sc.type) {
    case RopeType::Default:
      return {default_inverse_frequencies(dim, theta, device), 1.0};
    case RopeType::Linear:
      // Position interpolation: positions / s, folded into the frequencies.
      return {default_inverse_frequencies(dim, theta, device) / sc.factor, 1.0};
    case RopeType::Dynamic: {
      const int64_t seq_len = max_position + 1;
      if (seq_len <= sc.max_position_embeddings) {
        return {default_inverse_frequencies(dim, theta, device), 1.0};
      }
      // transformers computes the new base from the sequence length held in an int64 tensor,
      // so in fp32: (s * n / L_max - (s - 1))^(D / (D - 2)) * b.
      const at::Tensor n = at::scalar_tensor(seq_len, fopts.dtype(at::kLong));
      const at::Tensor base =
          ((n * sc.factor) / sc.max_position_embeddings - (sc.factor - 1))
              .pow(static_cast<double>(dim) / static_cast<double>(dim - 2)) *
          theta;
      const at::Tensor exponents =
          at::arange(0, dim, 2, fopts.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(dim);
      return {at::reciprocal(at::pow(base, exponents)), 1.0};
    }
    case RopeType::Llama3: {
      const at::Tensor inv_freq = default_inverse_frequencies(dim, theta, device);
      const double context = static_cast<double>(sc.original_max_position_embeddings);
      const double low_freq_wavelen = context / sc.low_freq_factor;
      const double high_freq_wavelen = context / sc.high_freq_factor;
      const at::Tensor wavelen = at::reciprocal(inv_freq) * (2 * M_PI);
      // Long wavelengths (low frequencies) are interpolated by s, short ones kept, and the
      // band between blends the two by where the wavelength sits.
      at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / sc.factor, inv_freq);
      const at::Tensor smooth = (at::reciprocal(wavelen) * sc.original_max_position_embeddings -
                                 sc.low_freq_factor) /
                                (sc.high_freq_factor - sc.low_freq_factor);
      const at::Tensor smoothed = (1 - smooth) * scaled / sc.factor + smooth * scaled;
      const at::Tensor medium =
          at::logical_not(wavelen < high_freq_wavelen) & at::logical_not(wavelen > low_freq_wavelen);
      return {at::where(medium, smoothed, scaled), 1.0};
    }
    case RopeType::Yarn: {
      const double factor = sc.factor;
      double attention = 0;
      if (sc.attention_factor) {
        attention = *sc.attention_factor;
      } else if (sc.mscale && sc.mscale_all_dim && *sc.mscale != 0 && *sc.mscale_all_dim != 0) {
        attention = yarn_mscale(factor, *sc.mscale) / yarn_mscale(factor, *sc.mscale_all_dim);
      } else {
        attention = yarn_mscale(factor, 1.0);
      }
      const double context = static_cast<double>(sc.original_max_position_embeddings);
      double low = yarn_correction_dim(sc.beta_fast, dim, theta, context);
      double high = yarn_correction_dim(sc.beta_slow, dim, theta, context);
      if (sc.truncate) {
        low = std::floor(low);
        high = std::ceil(high);
      }
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
      const at::Tensor exponents =
          at::arange(0, dim, 2, fopts.dtype(at::kLong)).to(at::kFloat) / static_cast<double>(dim);
      const at::Tensor pos_freqs = at::pow(theta, exponents);
      const at::Tensor extrapolation = at::reciprocal(pos_freqs);
      const at::Tensor interpolation = at::reciprocal(pos_freqs * factor);
      const at::Tensor ramp = at::clamp((at::arange(dim / 2, fopts) - low) / (high - low), 0, 1);
      const at::Tensor extrapolation_weight = 1 - ramp;
      return {interpolation * (1 - extrapolation_weight) + extrapolation * extrapolation_weight,
              attention};
    }
  }
  TORCH_INTERNAL_ASSERT(false, "rope: unhandled type");
  return {};
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t head_dim,
                                              double theta, const RopeScaling& scaling,
                                              at::ScalarType dtype) {
  TORCH_CHECK(positions.dim() == 2, "rope_tables: positions must be [B, T], got ",
              positions.sizes());
  TORCH_CHECK(head_dim > 0 && head_dim % 2 == 0, "rope_tables: head_dim must be even, got ",
              head_dim);
  // Only dynamic scaling depends on the pass's length (and pays a device sync to read it).
  const int64_t max_position =
      scaling.type == RopeType::Dynamic && positions.numel() > 0 ? positions.max().item<int64_t>()
                                                                 : 0;
  const auto [inv_freq, attention] =
      rope_inverse_frequencies(head_dim, theta, scaling, max_position, positions.device());
  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, T, D/2]
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  at::Tensor cos = emb.cos(), sin = emb.sin();
  if (attention != 1.0) {
    cos = cos * attention;
    sin = sin * attention;
  }
  return {cos.to(dtype), sin.to(dtype)};
}

std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t head_dim,
                                              double theta, at::ScalarType dtype) {
  return rope_tables(positions, head_dim, theta, RopeScaling{}, dtype);
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos_table, const at::Tensor& sin_table) {
  // In x's dtype, as transformers does: under autocast the projections come out in bf16 while
  // the tables are fp32, and an fp32 q, k beside a bf16 v would not reach the attention op.
  const at::Tensor cos = cos_table.to(x.scalar_type()), sin = sin_table.to(x.scalar_type());
  const int64_t half = x.size(-1) / 2;
  const at::Tensor rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  const at::Tensor y = x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
  return y.scalar_type() == x.scalar_type() ? y : y.to(x.scalar_type());
}

at::Tensor causal_attention_mask(const at::Tensor& key_mask, int64_t batch, int64_t past,
                                 int64_t steps, int64_t sliding_window, c10::Device device) {
  const int64_t total = past + steps;
  const auto iopts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor q_pos = at::arange(past, total, iopts).unsqueeze(1);  // [T, 1]
  const at::Tensor k_pos = at::arange(0, total, iopts).unsqueeze(0);     // [1, S]
  at::Tensor allowed = k_pos <= q_pos;
  if (sliding_window > 0) allowed = allowed & ((q_pos - k_pos) < sliding_window);
  allowed = allowed.view({1, 1, steps, total}).expand({batch, 1, steps, total});
  if (key_mask.defined()) {
    TORCH_CHECK(key_mask.dim() == 2 && key_mask.size(0) == batch && key_mask.size(1) == total,
                "attention mask must be [B, past + T] = [", batch, ", ", total, "], got ",
                key_mask.sizes());
    allowed = allowed & key_mask.to(device).to(at::kBool).view({batch, 1, 1, total});
  }
  return allowed;
}

at::Tensor attention_core(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask, double scale) {
  const int64_t batch = q.size(0), heads = q.size(1), kv_heads = k.size(1);
  TORCH_CHECK(heads % kv_heads == 0, "attention: ", heads, " query heads are not a multiple of ",
              kv_heads, " kv heads");
  at::Tensor keys = k, values = v;
  if (kv_heads != heads) {
    // Query head h reads kv head h / (H / H_kv), as transformers' repeat_kv lays them out.
    const int64_t rep = heads / kv_heads, len = k.size(2), dim = k.size(3);
    keys = k.unsqueeze(2).expand({batch, kv_heads, rep, len, dim}).reshape({batch, heads, len, dim});
    values = v.unsqueeze(2)
                 .expand({batch, kv_heads, rep, len, v.size(3)})
                 .reshape({batch, heads, len, v.size(3)});
  }
  // Scores and softmax in fp32 at least (half precision is widened, a double model keeps its
  // precision); a finite fill (not -inf) keeps fully masked rows finite.
  at::Tensor scores =
      at::matmul(q, keys.transpose(-2, -1)).to(at::promote_types(q.scalar_type(), at::kFloat)) * scale;
  if (mask.defined()) {
    scores = scores.masked_fill(mask.logical_not(), std::numeric_limits<float>::lowest());
  }
  const at::Tensor probs = at::softmax(scores, -1).to(q.scalar_type());
  return at::matmul(probs, values);
}

CausalSelfAttentionImpl::CausalSelfAttentionImpl(CausalSelfAttentionOptions o)
    : options(std::move(o)) {
  reset();
}

int64_t CausalSelfAttentionImpl::kv_heads() const {
  return options.kv_heads() > 0 ? options.kv_heads() : options.heads();
}

int64_t CausalSelfAttentionImpl::head_dim() const {
  return options.head_dim() > 0 ? options.head_dim() : options.dim() / options.heads();
}

void CausalSelfAttentionImpl::reset() {
  CONCORD_CHECK(options.dim() > 0 && options.heads() > 0,
                "CausalSelfAttention: dim and heads must be positive, got ", options.dim(), ", ",
                options.heads());
  CONCORD_CHECK(options.head_dim() > 0 || options.dim() % options.heads() == 0,
                "CausalSelfAttention: dim ", options.dim(), " is not a multiple of heads ",
                options.heads(), " (give head_dim)");
  CONCORD_CHECK(options.heads() % kv_heads() == 0, "CausalSelfAttention: heads ", options.heads(),
                " is not a multiple of kv_heads ", kv_heads());
  CONCORD_CHECK(!options.rope() || head_dim() % 2 == 0,
                "CausalSelfAttention: RoPE needs an even head_dim, got ", head_dim());
  const int64_t d = options.dim(), hd = head_dim();
  qkv = register_module(
      "qkv", Linear(LinearOptions(d, (options.heads() + 2 * kv_heads()) * hd).bias(options.qkv_bias())));
  out = register_module("out", Linear(LinearOptions(options.heads() * hd, d).bias(options.out_bias())));
  if (options.qk_norm()) {
    q_norm = register_module("q_norm", RMSNorm(RMSNormOptions(options.qk_norm_options())
                                                   .dim(options.heads() * hd)));
    k_norm = register_module("k_norm", RMSNorm(RMSNormOptions(options.qk_norm_options())
                                                   .dim(kv_heads() * hd)));
  }
}

at::Tensor CausalSelfAttentionImpl::forward(const at::Tensor& x, const AttentionContext& ctx,
                                            KVCache* cache, int64_t layer) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == options.dim(),
              "CausalSelfAttention: x must be [B, T, ", options.dim(), "], got ", x.sizes());
  const int64_t batch = x.size(0), steps = x.size(1);
  const int64_t h = options.heads(), hkv = kv_heads(), hd = head_dim();
  const at::Tensor proj = record_output(*qkv, linear(x, qkv->weight, qkv->bias));
  // One split, not three narrows: its backward concatenates the three gradients in one pass,
  // where each narrow's backward zero-fills a whole [B, T, (h + 2 hkv) hd] tensor to be summed.
  const std::vector<at::Tensor> parts = proj.split_with_sizes({h * hd, hkv * hd, hkv * hd}, -1);
  // OLMo-2 normalises q and k over all their heads at once, before splitting them.
  const at::Tensor q_flat = q_norm ? q_norm->forward(parts[0]) : parts[0];
  const at::Tensor k_flat = k_norm ? k_norm->forward(parts[1]) : parts[1];
  at::Tensor q = q_flat.reshape({batch, steps, h, hd}).transpose(1, 2);
  at::Tensor k = k_flat.reshape({batch, steps, hkv, hd}).transpose(1, 2);
  at::Tensor v = parts[2].reshape({batch, steps, hkv, hd}).transpose(1, 2);
  if (options.rope()) {
    TORCH_CHECK(ctx.cos.defined() && ctx.sin.defined(),
                "CausalSelfAttention: RoPE needs the rotary tables in the context");
    q = apply_rope(q, ctx.cos, ctx.sin);
    k = apply_rope(k, ctx.cos, ctx.sin);
  }
  if (cache != nullptr) std::tie(k, v) = cache->append(layer, k, v);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor o;
  if (ctx.plain_causal || ctx.segment_ids.defined()) {
    auto fused = ops::AttentionOptions().causal(true).scale(scale);
    if (ctx.segment_ids.defined()) fused.segment_ids(ctx.segment_ids);
    o = ops::attention(q, k, v, fused);
  } else {
    o = attention_core(q, k, v, ctx.mask, scale);
  }
  const at::Tensor y =
      record_output(*out, linear(o.transpose(1, 2).reshape({batch, steps, h * hd}), out->weight,
                                 out->bias));
  return record_output(*this, y);
}

void CausalSelfAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "concord::nn::CausalSelfAttention(dim=" << options.dim() << ", heads="
         << options.heads() << ", kv_heads=" << kv_heads() << ", head_dim=" << head_dim()
         << ", rope=" << (options.rope() ? "true" : "false")
         << (options.qk_norm() ? ", qk_norm=true" : "") << ")";
}

}  // namespace concord::nn
