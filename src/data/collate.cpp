#include "concord/data/collate.h"

#include <limits>

#include "concord/core/error.h"

namespace concord::data {

template <typename Int>
PaddedBatch pad_sequences(const std::vector<std::vector<Int>>& sequences, int64_t pad_value,
                          PadSide side, int64_t pad_to) {
  auto B = static_cast<int64_t>(sequences.size());
  int64_t T = std::max<int64_t>(pad_to, 0);
  for (const auto& s : sequences) T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
  at::Tensor ids = at::full({B, T}, pad_value, at::kLong);
  at::Tensor mask = at::zeros({B, T}, at::kLong);
  at::Tensor lengths = at::empty({B}, at::kLong);
  auto* pid = ids.data_ptr<int64_t>();
  auto* pmask = mask.data_ptr<int64_t>();
  auto* plen = lengths.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = sequences[static_cast<size_t>(b)];
    auto len = static_cast<int64_t>(s.size());
    int64_t start = side == PadSide::right ? 0 : T - len;
    for (int64_t t = 0; t < len; ++t) {
      pid[b * T + start + t] = static_cast<int64_t>(s[static_cast<size_t>(t)]);
      pmask[b * T + start + t] = 1;
    }
    plen[b] = len;
  }
  return {ids, mask, lengths};
}

template PaddedBatch pad_sequences<int32_t>(const std::vector<std::vector<int32_t>>&, int64_t,
                                            PadSide, int64_t);
template PaddedBatch pad_sequences<int64_t>(const std::vector<std::vector<int64_t>>&, int64_t,
                                            PadSide, int64_t);

at::Tensor position_ids_from_mask(const at::Tensor& attention_mask) {
  CONCORD_CHECK(attention_mask.dim() == 2, "position_ids_from_mask: expected a [B, T] mask, got ",
                attention_mask.dim(), " dimensions");
  at::Tensor m = attention_mask.to(at::kLong);
  return (m.cumsum(1) - 1).clamp_min(0) * m;
}

at::Tensor block_causal_mask(const at::Tensor& segment_ids) {
  CONCORD_CHECK(segment_ids.dim() == 2, "block_causal_mask: expected [B, T] segment ids, got ",
                segment_ids.dim(), " dimensions");
  int64_t T = segment_ids.size(1);
  at::Tensor seg = segment_ids.to(at::kLong);
  at::Tensor same = seg.unsqueeze(2) == seg.unsqueeze(1);  // [B, T(query), T(key)]
  at::Tensor causal = at::ones({T, T}, seg.options().dtype(at::kBool)).tril();
  at::Tensor real = (seg != 0).unsqueeze(2);
  at::Tensor diagonal = at::eye(T, seg.options()).to(at::kBool);
  return ((same & causal & real) | diagonal).unsqueeze(1);
}

at::Tensor additive_mask(const at::Tensor& bool_mask, at::ScalarType dtype) {
  CONCORD_CHECK(bool_mask.scalar_type() == at::kBool, "additive_mask: expected a bool mask");
  double lowest;
  switch (dtype) {
    case at::kHalf: lowest = -65504.0; break;
    case at::kDouble: lowest = std::numeric_limits<double>::lowest(); break;
    case at::kFloat:
    case at::kBFloat16: lowest = std::numeric_limits<float>::lowest(); break;
    default: fail("additive_mask: dtype must be floating point");
  }
  return at::zeros(bool_mask.sizes(), bool_mask.options().dtype(dtype))
      .masked_fill(bool_mask.logical_not(), lowest);
}

}  // namespace concord::data
