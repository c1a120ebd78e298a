// Feature diversity per layer, the quantity behind PanGu-π's feature-collapse analysis
// (arXiv 2312.17276, Section 3). For the features H [N, d] of one sequence (N tokens) and the
// subspace of "collapsed" feature matrices, where every token has the same feature,
//
//   M = { 1 x^T : x in R^d },      d_M(H) = min_{Y in M} ||H - Y||_F = ||H - 1 mean(H)^T||_F
//
// (the minimiser is the row mean: ||H - 1 x^T||_F^2 is a quadratic in x whose gradient
// 2 (N x - H^T 1) vanishes at x = H^T 1 / N). The paper shows d_M shrinks through a stack of
// attention layers (rank collapse) unless nonlinearity or shortcuts restore it, and plots it per
// layer; this header computes it for any CausalLM on any text.
//
// Normalisation (the paper's bound is on the raw distance; its plots compare layers of one
// model). Concord reports three forms per layer, each averaged over sequences with equal weight:
//   distance   d_M(H)                 raw, grows with sqrt(N) and with the residual stream's scale
//   per_token  d_M(H) / sqrt(N)       root-mean-square distance of a token from the mean token,
//                                     so sequences of different lengths average fairly
//   relative   d_M(H) / ||H||_F       in [0, 1], scale-free: 0 is total collapse, 1 a zero-mean
//                                     set of tokens; the one to compare across depths, since a
//                                     pre-norm residual stream grows in norm with depth
// Only real tokens count: padding rows are excluded from the mean and from both norms.
// "Layer 0" is the input embedding (token + learned positions); layer l the output of block l,
// before the final norm.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/lm/causal_lm.h"
#include "concord/text/tokenizer.h"

namespace concord::lm {

/// d_M(H) for every sequence of a batch: `features` [B, N, d] (or one sequence [N, d]),
/// `mask` [B, N] (or [N]) 1 at real tokens, 0 at padding (undefined: all real). Returns [B]
/// (or a scalar) in float64. A sequence with no real token gives 0.
at::Tensor feature_distance(const at::Tensor& features, const at::Tensor& mask = {});

/// ||H||_F over the real tokens, shaped as feature_distance's result.
at::Tensor feature_norm(const at::Tensor& features, const at::Tensor& mask = {});

struct DiversityOptions {
  /// Sequences per forward pass.
  int64_t batch_size = 8;
  /// Longest sequence measured; longer ones are cut to their first max_length tokens
  /// (0: the model's max_position_embeddings).
  int64_t max_length = 0;
  /// Sequences shorter than this are skipped (d_M of one token is 0 by definition).
  int64_t min_length = 2;
  /// Id written at padding positions (never attended, never measured).
  int64_t pad_token_id = 0;
};

/// Per-layer diversity of a model over a set of sequences; index 0 is the input embedding.
struct LayerDiversity {
  std::vector<double> distance;   ///< mean over sequences of d_M(H_l)
  std::vector<double> per_token;  ///< mean over sequences of d_M(H_l) / sqrt(N)
  std::vector<double> relative;   ///< mean over sequences of d_M(H_l) / ||H_l||_F
  int64_t sequences = 0;          ///< sequences measured
  int64_t skipped = 0;            ///< shorter than min_length
  int64_t tokens = 0;             ///< real tokens measured (after truncation)
  int64_t truncated = 0;          ///< sequences cut to max_length

  size_t num_layers() const { return distance.size(); }
  /// "embedding", "block 1", ... "block L".
  static std::string layer_name(size_t index);
  nlohmann::json to_json() const;
};

/// Runs the model on `sequences` (token ids; batched with right padding, under InferenceMode)
/// and measures every layer.
LayerDiversity layer_diversity(CausalLM model, const std::vector<std::vector<int64_t>>& sequences,
                               const DiversityOptions& options = {});

/// Tokenises `texts` (with the tokenizer's special tokens) and measures them; the tokenizer's
/// pad id is used for padding when it is inside the model's vocabulary.
LayerDiversity layer_diversity_texts(CausalLM model, const text::Tokenizer& tokenizer,
                                     const std::vector<std::string>& texts,
                                     const DiversityOptions& options = {});

}  // namespace concord::lm
