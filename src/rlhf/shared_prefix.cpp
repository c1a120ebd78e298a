#include "concord/rlhf/shared_prefix.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "concord/core/error.h"

namespace concord::rlhf {

std::string min_shared_fraction_text() {
  return std::to_string(std::lround(100 * kMinSharedFraction)) + "%";
}

namespace {

// Real tokens of each right-padded row; refuses a mask with a gap or an empty row, which no
// collated batch has and which the layout could not represent.
std::vector<int64_t> row_lengths(const at::Tensor& mask, const char* side) {
  CONCORD_CHECK(mask.dim() == 2, "SharedPrefixPairs: the ", side, " mask must be [B, T], got ",
                mask.sizes());
  const at::Tensor m = mask.to(at::kCPU).ne(0).to(at::kLong).contiguous();
  const int64_t rows = m.size(0), cols = m.size(1);
  const int64_t* p = m.data_ptr<int64_t>();
  std::vector<int64_t> out(static_cast<size_t>(rows));
  for (int64_t b = 0; b < rows; ++b) {
    int64_t n = 0;
    while (n < cols && p[b * cols + n] != 0) ++n;
    for (int64_t j = n; j < cols; ++j) {
      CONCORD_CHECK(p[b * cols + j] == 0, "SharedPrefixPairs: ", side, " row ", b,
                    " is not right-padded (a real token at column ", j, " after padding)");
    }
    CONCORD_CHECK(n > 0, "SharedPrefixPairs: ", side, " row ", b, " has no real token");
    out[static_cast<size_t>(b)] = n;
  }
  return out;
}

}  // namespace

SharedPrefixPairs SharedPrefixPairs::build(const at::Tensor& chosen_ids,
                                           const at::Tensor& chosen_mask,
                                           const at::Tensor& rejected_ids,
                                           const at::Tensor& rejected_mask, int64_t pad_id,
                                           const at::Tensor& max_shared) {
  CONCORD_CHECK(chosen_ids.dim() == 2 && rejected_ids.dim() == 2 &&
                    chosen_ids.size(0) == rejected_ids.size(0) &&
                    chosen_mask.sizes() == chosen_ids.sizes() &&
                    rejected_mask.sizes() == rejected_ids.sizes(),
                "SharedPrefixPairs: expected chosen ids and mask [B, Tc], rejected [B, Tr], got ",
                chosen_ids.sizes(), ", ", chosen_mask.sizes(), ", ", rejected_ids.sizes(), ", ",
                rejected_mask.sizes());
  SharedPrefixPairs out;
  out.chosen_ids_ = chosen_ids.to(at::kCPU).to(at::kLong).contiguous();
  out.chosen_mask_ = chosen_mask.to(at::kCPU).to(at::kLong);
  out.rejected_ids_ = rejected_ids.to(at::kCPU).to(at::kLong).contiguous();
  out.rejected_mask_ = rejected_mask.to(at::kCPU).to(at::kLong);
  out.pad_id_ = pad_id;
  if (max_shared.defined()) {
    CONCORD_CHECK(max_shared.dim() == 1 && max_shared.size(0) == chosen_ids.size(0),
                  "SharedPrefixPairs: max_shared must be [", chosen_ids.size(0), "], got ",
                  max_shared.sizes());
    out.max_shared_ = max_shared.to(at::kCPU).to(at::kLong).contiguous();
  }

  const int64_t B = out.chosen_ids_.size(0);
  const std::vector<int64_t> lc = row_lengths(out.chosen_mask_, "chosen");
  const std::vector<int64_t> lr = row_lengths(out.rejected_mask_, "rejected");
  const int64_t tc = out.chosen_ids_.size(1), tr = out.rejected_ids_.size(1);
  const int64_t* c = out.chosen_ids_.data_ptr<int64_t>();
  const int64_t* r = out.rejected_ids_.data_ptr<int64_t>();

  // s_b: the common prefix, one token short of the shorter row (every continuation keeps the
  // token its reward is read at).
  std::vector<int64_t> common(static_cast<size_t>(B)), longest(static_cast<size_t>(B));
  int64_t most_common = 0, T = 0;
  for (int64_t b = 0; b < B; ++b) {
    const size_t i = static_cast<size_t>(b);
    int64_t limit = std::min(lc[i], lr[i]) - 1;
    if (out.max_shared_.defined()) limit = std::min(limit, out.max_shared_.data_ptr<int64_t>()[b]);
    int64_t s = 0;
    while (s < limit && c[b * tc + s] == r[b * tr + s]) ++s;
    common[i] = s;
    longest[i] = std::max(lc[i], lr[i]);
    most_common = std::max(most_common, s);
    T = std::max(T, longest[i]);
    out.row_tokens_ += lc[i] + lr[i];
  }
  // Both passes compute their padding too: B x S for the prefixes, 2B x R for the continuations.
  // A pair with a short prefix would widen every continuation, so the split is the prefix width
  // S that minimises B S + 2B max_b(L_b - min(s_b, S)) (S = 0 is the 2B x T stacked rows).
  auto cost = [&](int64_t width) {
    int64_t rest = 0;
    for (size_t i = 0; i < common.size(); ++i) rest = std::max(rest, longest[i] - std::min(common[i], width));
    return B * width + 2 * B * rest;
  };
  int64_t S = 0;
  for (int64_t width = 1; width <= most_common; ++width) {
    if (cost(width) < cost(S)) S = width;
  }
  std::vector<int64_t> shared(static_cast<size_t>(B));
  int64_t R = 0;
  for (size_t i = 0; i < shared.size(); ++i) {
    shared[i] = std::min(common[i], S);
    R = std::max({R, lc[i] - shared[i], lr[i] - shared[i]});
    out.shared_tokens_ += shared[i];
  }
  out.computed_tokens_ = B * S + 2 * B * R;
  out.stacked_tokens_ = 2 * B * T;

  const auto longs = at::TensorOptions().dtype(at::kLong);
  out.prefix_ids = at::full({B, S}, pad_id, longs);
  out.prefix_mask = at::zeros({B, S}, longs);
  out.continuation_ids = at::full({2 * B, R}, pad_id, longs);
  out.attention_mask = at::zeros({2 * B, S + R}, longs);
  out.last_index = at::empty({2 * B}, longs);
  out.shared = at::tensor(shared, longs);
  int64_t* pi = out.prefix_ids.data_ptr<int64_t>();
  int64_t* pm = out.prefix_mask.data_ptr<int64_t>();
  int64_t* ci = out.continuation_ids.data_ptr<int64_t>();
  int64_t* am = out.attention_mask.data_ptr<int64_t>();
  int64_t* last = out.last_index.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    const size_t i = static_cast<size_t>(b);
    const int64_t s = shared[i];
    for (int64_t j = 0; j < s; ++j) {  // left-padded: the prefix ends at column S
      pi[b * S + S - s + j] = c[b * tc + j];
      pm[b * S + S - s + j] = 1;
    }
    // Row b holds the chosen continuation, row B + b the rejected one.
    const int64_t* src[2] = {c + b * tc, r + b * tr};
    const int64_t len[2] = {lc[i], lr[i]};
    for (int64_t side = 0; side < 2; ++side) {
      const int64_t row = side * B + b;
      for (int64_t j = 0; j < S; ++j) am[row * (S + R) + j] = pm[b * S + j];
      for (int64_t j = s; j < len[side]; ++j) {
        ci[row * R + (j - s)] = src[side][j];
        am[row * (S + R) + S + (j - s)] = 1;
      }
      last[row] = len[side] - s - 1;
    }
  }
  return out;
}

bool SharedPrefixPairs::pays() const {
  return static_cast<double>(computed_tokens_) <=
         (1.0 - kMinSharedFraction) * static_cast<double>(stacked_tokens_);
}

std::optional<SharedPrefixPairs> shared_prefix_layout(const data::PreferenceBatch& batch,
                                                      int64_t pad_id, bool enabled,
                                                      const at::Tensor& max_shared) {
  if (!enabled) return std::nullopt;
  SharedPrefixPairs pairs = SharedPrefixPairs::build(batch.chosen_ids, batch.chosen_mask,
                                                     batch.rejected_ids, batch.rejected_mask,
                                                     pad_id, max_shared);
  if (!pairs.pays()) return std::nullopt;
  return pairs;
}

SharedPrefixPairs SharedPrefixPairs::subset(const at::Tensor& index) const {
  const at::Tensor i = index.to(at::kCPU).to(at::kLong);
  return build(chosen_ids_.index_select(0, i), chosen_mask_.index_select(0, i),
               rejected_ids_.index_select(0, i), rejected_mask_.index_select(0, i), pad_id_,
               max_shared_.defined() ? max_shared_.index_select(0, i) : at::Tensor());
}

nn::KVCache encode_prefixes(lm::CausalLM model, const SharedPrefixPairs& pairs) {
  CONCORD_CHECK(pairs.prefix_length() > 0, "encode_prefixes: the pairs share no prefix");
  const c10::Device device = model->embed->weight.device();
  nn::KVCache cache = model->make_cache();
  cache.reserve(pairs.attention_mask.size(1));
  // The prefixes' own outputs are not needed (their last layer's keys and values are).
  model->hidden_states(pairs.prefix_ids.to(device), pairs.prefix_mask.to(device), &cache);
  const auto longs = at::TensorOptions().dtype(at::kLong).device(device);
  cache.select_rows(at::arange(pairs.pairs(), longs).repeat({2}));
  return cache;
}

at::Tensor continuation_hidden_states(lm::CausalLM model, const SharedPrefixPairs& pairs) {
  const c10::Device device = model->embed->weight.device();
  const at::Tensor ids = pairs.continuation_ids.to(device);
  const at::Tensor mask = pairs.attention_mask.to(device);
  if (pairs.prefix_length() == 0) return model->hidden_states(ids, mask);
  nn::KVCache cache = encode_prefixes(model, pairs);
  return model->hidden_states(ids, mask, &cache);
}

}  // namespace concord::rlhf
