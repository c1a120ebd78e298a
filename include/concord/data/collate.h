// Collation: variable-length token sequences into padded int64 batches, and the attention mask
// of packed rows.
//
// Padding. Right padding (training): sequence b occupies columns [0, len_b). Left padding
// (batched generation): it occupies [T - len_b, T), so every row's next token is appended at
// the same column. attention_mask is 1 on real tokens, 0 on padding (as Hugging Face).
//
// Packing. A packed row holds several samples; segment_ids numbers them 1, 2, ... within the
// row (0 = padding) and position_ids restart at 0 at each sample. block_causal_mask() turns
// segment ids into the mask M[b, 0, i, j] = (seg[i] == seg[j] != 0 and j <= i) — causal inside
// a sample, nothing across samples — so a packed row trains exactly like its samples would one
// by one. A padding position attends to itself only: a softmax row with every key masked
// would give NaN.
#pragma once
#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

namespace concord::data {

enum class PadSide { right, left };

struct PaddedBatch {
  at::Tensor ids;             ///< [B, T] int64
  at::Tensor attention_mask;  ///< [B, T] int64, 1 = real token
  at::Tensor lengths;         ///< [B] int64
};

/// Pads `sequences` with `pad_value` to the longest (or to `pad_to` when larger; a sequence
/// longer than `pad_to` is not cut). An empty list gives [0, 0] tensors.
template <typename Int>
PaddedBatch pad_sequences(const std::vector<std::vector<Int>>& sequences, int64_t pad_value,
                          PadSide side = PadSide::right, int64_t pad_to = 0);

/// Positions 0..len-1 of the real tokens of each row given its attention mask (left padding
/// shifts them); padding positions get 0.
at::Tensor position_ids_from_mask(const at::Tensor& attention_mask);

/// [B, 1, T, T] bool mask (true = may attend) from [B, T] integer segment ids, per the rule in
/// the header comment. Broadcasts over heads; pass it to scaled-dot-product attention.
at::Tensor block_causal_mask(const at::Tensor& segment_ids);

/// The additive form of a boolean mask: 0 where allowed, the dtype's lowest value elsewhere.
at::Tensor additive_mask(const at::Tensor& bool_mask, at::ScalarType dtype = at::kFloat);

}  // namespace concord::data
