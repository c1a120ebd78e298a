// Rows that begin alike, run once: GRPO's G samples of one prompt, best-of-n sampling, a
// dataset that repeats a prompt within a batch.
//
// A causal model's hidden states on a row's first columns do not depend on what follows them.
// So the first `columns` columns of N rows can run once per distinct prefix (U of them), their
// keys and values be copied to every row that repeats the prefix, and only the remaining
// columns run per row:
//
//   pass 1: the U distinct prefixes, ids[rows, 0:c]       [U, c]     into a KV cache, then
//           the cache's rows copied to the N rows          (nn::KVCache::select_rows)
//   pass 2: every row's columns c..T                       [N, T - c] attending to the cache
//
// The columns stay where they are in the row (a left-padded prompt stays left-padded), so
// positions (from the attention mask), sliding windows and PanGu-pi's SIAF state see what the
// full row shows them, and backward sums the repeats' gradients into their prefix. The result
// equals the full rows' hidden states up to floating-point summation order, with (N - U) c fewer
// token slots through the model.
#pragma once
#include <cstdint>

#include <ATen/ATen.h>

#include "concord/lm/causal_lm.h"
#include "concord/nn/kv_cache.h"

namespace concord::lm {

/// The share of the token slots a split must save before it is run: pass 2 attends through a
/// padding mask and pass 1's last layer computes outputs nothing reads, which a few percent of
/// the tokens do not pay for.
inline constexpr double kMinSharedFraction = 0.1;

/// The distinct prefixes of a batch of rows.
struct RepeatedPrefixes {
  int64_t columns = 0;  ///< the prefix: columns [0, columns) of each row
  /// [U] int64: one row of each distinct prefix (undefined: not searched).
  at::Tensor representative;
  /// [N] int64: each row's distinct prefix, an index into `representative`.
  at::Tensor inverse;

  int64_t distinct() const { return representative.defined() ? representative.size(0) : 0; }
  int64_t rows() const { return inverse.defined() ? inverse.size(0) : 0; }
  /// Token slots of the two passes over rows of `width` columns, U c + N (width - c), against
  /// the rows' own N width.
  int64_t computed_tokens(int64_t width) const;
  /// Whether the two passes save at least `min_fraction` of the rows' token slots (false when
  /// nothing was searched or no prefix repeats).
  bool pays(int64_t width, double min_fraction = kMinSharedFraction) const;
};

/// Groups the rows of `ids` [N, T] by their first `columns` columns: two rows share a prefix
/// when their mask ([N, T], undefined: all ones) agrees there and so do their ids where it is 1.
/// Runs on the ids' device (one at::unique_dim; a CUDA batch is not copied to the host).
RepeatedPrefixes find_repeated_prefixes(const at::Tensor& ids, const at::Tensor& mask,
                                        int64_t columns);

/// Pass 1: each distinct prefix through `model` once (autograd as the caller has it), into
/// `cache` (empty; reserve() it for the rows' full length first), whose rows then become the N
/// rows. Returns the final hidden states of the N rows at the prefix's last column, [N, d].
at::Tensor encode_repeated_prefixes(CausalLM model, const at::Tensor& ids, const at::Tensor& mask,
                                    const RepeatedPrefixes& prefixes, nn::KVCache& cache);

/// The final hidden states [N, T - columns, d] of columns [columns, T) of every row, what
/// model->hidden_states(ids, mask).narrow(1, columns, T - columns) gives: each distinct prefix
/// run once when that pays(T, min_fraction), else the rows as they are. mask [N, T] (undefined:
/// no padding); 0 <= columns < T.
at::Tensor hidden_states_after_prefix(CausalLM model, const at::Tensor& ids, const at::Tensor& mask,
                                      int64_t columns, double min_fraction = kMinSharedFraction);

}  // namespace concord::lm
