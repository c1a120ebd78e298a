// Causal multi-head self-attention with grouped-query heads (GQA, Ainslie et al., arXiv
// 2305.13245), rotary position embeddings (RoPE, Su et al., arXiv 2104.09864, Eq. 34) and a
// KV cache, in the layouts of the models Concord loads:
//
//   q, k, v = x W_qkv (+ b_qkv)   one fused projection, [H*D | H_kv*D | H_kv*D] output columns
//   q, k    = RMSNorm(q), RMSNorm(k)   OLMo-2 only: each over its whole projected width
//   q, k    = RoPE(q, k)          transformers' "rotate_half" layout: the two halves of a head
//                                 are the (real, imaginary) parts, frequencies theta^(-2i/D)
//   o       = softmax(q k^T / sqrt(D) + mask) v,   each kv head shared by H/H_kv query heads
//   y       = o W_o (+ b_o)
//
// The mask is causal over cache positions, drops padding keys, and optionally keeps only the
// last `sliding_window` keys (Mistral). The layers call the fused flash-style ops::attention
// (concord/ops/attention.h) for plain causal batches, and for padded or packed ones through its
// segment ids when a fused kernel serves the device and dtype (AttentionContext says which). A
// sliding window within reach, or padding without a fused kernel, goes through attention_core(),
// which materialises the [T, S] scores in plain ATen.
//
// RoPE's frequencies follow transformers' rope types (modeling_rope_utils.py), computed in fp32
// in the same operation order, with D the head width, base b = rope_theta, s the factor and
// L = original_max_position_embeddings:
//
//   default  inv_freq_i = b^(-2i/D)
//   linear   inv_freq_i = b^(-2i/D) / s                     (position interpolation)
//   dynamic  b' = b * (s * n / L_max - (s - 1))^(D / (D - 2)) when the pass reaches n > L_max
//            positions (n = max position id + 1, L_max = max_position_embeddings), then
//            inv_freq_i = b'^(-2i/D); below L_max the default frequencies (NTK-aware scaling)
//   llama3   with wavelength w_i = 2 pi / f_i (f the default frequencies): f_i when
//            w_i < L / high_freq_factor, f_i / s when w_i > L / low_freq_factor, else
//            (1 - g) f_i / s + g f_i with g = (L / w_i - low_freq_factor) /
//            (high_freq_factor - low_freq_factor)   (Llama 3.1)
//   yarn     inv_freq_i = (f_i / s)(1 - e_i) + f_i e_i, with the extrapolation weight
//            e_i = 1 - clamp((i - lo) / (hi - lo), 0, 1) a ramp over i < D/2 between the
//            dimensions lo, hi whose wavelengths turn beta_fast and beta_slow times over L,
//            dim(r) = D ln(L / (2 pi r)) / (2 ln b) (floored / ceiled unless truncate is false);
//            cos and sin are multiplied by the attention factor m = 0.1 ln(s) + 1 (or
//            m(s, mscale) / m(s, mscale_all_dim), or attention_factor when given) (YaRN, Peng
//            et al., arXiv 2309.00071: "NTK-by-parts" interpolation and the sqrt(1/t)
//            attention temperature; "dynamic" is the paper's Dynamic NTK)
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>

#include "concord/nn/kv_cache.h"
#include "concord/nn/linear.h"
#include "concord/nn/norm.h"

namespace concord::nn {

enum class RopeType { Default, Linear, Dynamic, Yarn, Llama3 };

/// "default", "linear", "dynamic", "yarn", "llama3" (transformers' rope_type names).
const char* rope_type_name(RopeType type);
/// Inverse of rope_type_name; nullopt for any other name.
std::optional<RopeType> parse_rope_type(const std::string& name);

/// How RoPE's frequencies are scaled (the equations are in this header's first comment). The
/// fields a type does not use are ignored.
struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                        ///< s: linear, dynamic, yarn, llama3
  int64_t original_max_position_embeddings = 0;  ///< L: yarn, llama3
  int64_t max_position_embeddings = 0;        ///< L_max: dynamic (the model's context)
  double low_freq_factor = 1.0;               ///< llama3
  double high_freq_factor = 4.0;              ///< llama3
  double beta_fast = 32.0;                    ///< yarn
  double beta_slow = 1.0;                     ///< yarn
  std::optional<double> attention_factor;     ///< yarn: given instead of derived from s
  std::optional<double> mscale;               ///< yarn (DeepSeek-style attention factor)
  std::optional<double> mscale_all_dim;       ///< yarn
  bool truncate = true;                       ///< yarn: floor/ceil the correction range
};

/// RoPE's inverse frequencies [head_dim / 2] (fp32, on `device`) and the factor cos and sin are
/// multiplied by, for a pass whose largest position id is `max_position` (only dynamic scaling
/// reads it). Exactly transformers' ROPE_INIT_FUNCTIONS, operation for operation.
std::pair<at::Tensor, double> rope_inverse_frequencies(int64_t head_dim, double theta,
                                                       const RopeScaling& scaling,
                                                       int64_t max_position, c10::Device device);

/// Rotary tables for `positions` ([B, T] int64): cos and sin, [B, T, head_dim] in `dtype`,
/// each half repeated (cat(freqs, freqs)) as transformers builds them; angles in fp32, scaled by
/// the attention factor (YaRN) in fp32 before the cast.
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t head_dim,
                                              double theta, const RopeScaling& scaling,
                                              at::ScalarType dtype);
/// Default RoPE (no scaling).
std::pair<at::Tensor, at::Tensor> rope_tables(const at::Tensor& positions, int64_t head_dim,
                                              double theta, at::ScalarType dtype);

/// x: [B, H, T, D]; cos/sin: [B, T, D]. x * cos + rotate_half(x) * sin, in x's dtype (fp32
/// tables on half-precision x rotate in fp32 and round once, as OLMo-2 does).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

/// Which keys each query may see: [B, 1, T, past + T] bool. Query t sits at cache position
/// past + t and sees key s when s <= past + t, the key is not padding (`key_mask`, [B, past + T]
/// 0/1, undefined: none is) and, with sliding_window > 0, past + t - s < sliding_window.
at::Tensor causal_attention_mask(const at::Tensor& key_mask, int64_t batch, int64_t past,
                                 int64_t steps, int64_t sliding_window, c10::Device device);

/// softmax(q k^T * scale, masked) v with q [B, H, T, D], k and v [B, H_kv, S, D] (H a multiple
/// of H_kv), mask [B, 1, T, S] bool (true: may attend). Fully masked rows (queries at padding)
/// get uniform weights instead of NaN. Returns [B, H, T, D]. The path for masks ops::attention
/// does not take (see above).
at::Tensor attention_core(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const at::Tensor& mask, double scale);

/// What every layer of one forward pass shares (computed once per pass by the model).
struct AttentionContext {
  at::Tensor cos, sin;  ///< [B, T, D] rotary tables; undefined when the model has no RoPE
  at::Tensor mask;      ///< [B, 1, T, S] bool (causal_attention_mask); undefined on fused paths
  /// True when the mask would be plain causal (no padding, no sliding window in reach): the
  /// layers then call the fused flash-style ops::attention instead of materialising [T, S] scores.
  bool plain_causal = false;
  /// [B, S] int64 segment ids for the fused op's segment rule (ops/attention.h): the 0/1
  /// attention mask of a padded batch (padding keys are never read by real queries) or the ids
  /// of packed rows. When defined, the layers call ops::attention with it instead of `mask`.
  at::Tensor segment_ids;
};

struct CausalSelfAttentionOptions {
  CausalSelfAttentionOptions(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {}
  /// d: model width.
  TORCH_ARG(int64_t, dim);
  /// H: query heads.
  TORCH_ARG(int64_t, heads);
  /// H_kv: key/value heads (0: H, plain multi-head attention).
  TORCH_ARG(int64_t, kv_heads) = 0;
  /// D: per-head width (0: d / H).
  TORCH_ARG(int64_t, head_dim) = 0;
  /// Biases on the q, k, v projections (GPT-2, Qwen2).
  TORCH_ARG(bool, qkv_bias) = false;
  /// Bias on the output projection (GPT-2).
  TORCH_ARG(bool, out_bias) = false;
  /// Rotary embeddings applied to q and k (the tables come in AttentionContext).
  TORCH_ARG(bool, rope) = true;
  /// RMSNorm over q's H*D and k's H_kv*D columns before RoPE (OLMo-2).
  TORCH_ARG(bool, qk_norm) = false;
  /// Options of those norms (their dim is set from the head counts).
  TORCH_ARG(RMSNormOptions, qk_norm_options) = RMSNormOptions(1);
};

class CausalSelfAttentionImpl : public torch::nn::Cloneable<CausalSelfAttentionImpl> {
 public:
  explicit CausalSelfAttentionImpl(CausalSelfAttentionOptions options);
  void reset() override;
  /// x: [B, T, d] -> [B, T, d]. With a cache, this layer's keys and values are appended to
  /// `cache` at `layer` and attention covers every cached token.
  at::Tensor forward(const at::Tensor& x, const AttentionContext& ctx, KVCache* cache = nullptr,
                     int64_t layer = 0);
  int64_t kv_heads() const;
  int64_t head_dim() const;
  void pretty_print(std::ostream& stream) const override;

  CausalSelfAttentionOptions options;
  Linear qkv{nullptr};      ///< d -> (H + 2 H_kv) D
  Linear out{nullptr};      ///< H D -> d
  RMSNorm q_norm{nullptr};  ///< [H D], OLMo-2 only
  RMSNorm k_norm{nullptr};  ///< [H_kv D], OLMo-2 only
};
TORCH_MODULE(CausalSelfAttention);

}  // namespace concord::nn
