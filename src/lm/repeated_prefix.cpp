#include "concord/lm/repeated_prefix.h"

#include "concord/core/error.h"

namespace concord::lm {

int64_t RepeatedPrefixes::computed_tokens(int64_t width) const {
  return distinct() * columns + rows() * (width - columns);
}

bool RepeatedPrefixes::pays(int64_t width, double min_fraction) const {
  if (columns == 0 || distinct() == 0 || distinct() == rows()) return false;
  return static_cast<double>(computed_tokens(width)) <=
         (1.0 - min_fraction) * static_cast<double>(rows() * width);
}

RepeatedPrefixes find_repeated_prefixes(const at::Tensor& ids, const at::Tensor& mask,
                                        int64_t columns) {
  CONCORD_CHECK(ids.dim() == 2 && columns >= 0 && columns <= ids.size(1),
                "find_repeated_prefixes: ids must be [N, T] with 0 <= columns (", columns,
                ") <= T, got ", ids.sizes());
  CONCORD_CHECK(!mask.defined() || mask.sizes() == ids.sizes(), "find_repeated_prefixes: mask ",
                mask.sizes(), " does not match ids ", ids.sizes());
  RepeatedPrefixes out;
  out.columns = columns;
  if (columns == 0 || ids.size(0) == 0) return out;
  // A padded column compares as -1 whatever id fills it (token ids are >= 0).
  at::Tensor key = ids.narrow(1, 0, columns).to(at::kLong);
  if (mask.defined()) key = at::where(mask.narrow(1, 0, columns) != 0, key, at::full_like(key, -1));
  const auto unique = at::unique_dim(key, 0, /*sorted=*/true, /*return_inverse=*/true);
  out.inverse = std::get<1>(unique);
  const int64_t distinct = std::get<0>(unique).size(0);
  // Any row of a group represents it: the rows of a group are equal on the prefix.
  const at::Tensor row = at::arange(ids.size(0), out.inverse.options());
  out.representative = at::empty({distinct}, out.inverse.options()).scatter_(0, out.inverse, row);
  return out;
}

at::Tensor encode_repeated_prefixes(CausalLM model, const at::Tensor& ids, const at::Tensor& mask,
                                    const RepeatedPrefixes& prefixes, nn::KVCache& cache) {
  CONCORD_CHECK(prefixes.columns > 0 && prefixes.distinct() > 0 && prefixes.rows() == ids.size(0),
                "encode_repeated_prefixes: no prefixes found for these ", ids.size(0), " rows");
  CONCORD_CHECK(cache.length() == 0, "encode_repeated_prefixes: the cache already holds ",
                cache.length(), " tokens");
  const c10::Device device = model->embed->weight.device();
  const int64_t c = prefixes.columns;
  const at::Tensor rows = prefixes.representative.to(ids.device());
  const at::Tensor prefix_ids = ids.narrow(1, 0, c).index_select(0, rows).to(device);
  const at::Tensor prefix_mask =
      mask.defined() ? mask.narrow(1, 0, c).index_select(0, rows.to(mask.device())).to(device)
                     : at::Tensor();
  const at::Tensor hidden = model->hidden_states(prefix_ids, prefix_mask, &cache);  // [U, c, d]
  const at::Tensor inverse = prefixes.inverse.to(device);
  cache.select_rows(inverse);
  return hidden.select(1, c - 1).index_select(0, inverse);
}

at::Tensor hidden_states_after_prefix(CausalLM model, const at::Tensor& ids, const at::Tensor& mask,
                                      int64_t columns, double min_fraction) {
  CONCORD_CHECK(ids.dim() == 2 && columns >= 0 && columns < ids.size(1),
                "hidden_states_after_prefix: ids must be [N, T] with 0 <= columns (", columns,
                ") < T, got ", ids.sizes());
  const int64_t T = ids.size(1);
  if (columns > 0) {
    const RepeatedPrefixes prefixes = find_repeated_prefixes(ids, mask, columns);
    if (prefixes.pays(T, min_fraction)) {
      const c10::Device device = model->embed->weight.device();
      nn::KVCache cache = model->make_cache();
      cache.reserve(T);
      encode_repeated_prefixes(model, ids, mask, prefixes, cache);
      return model->hidden_states(ids.narrow(1, columns, T - columns).to(device),
                                  mask.defined() ? mask.to(device) : at::Tensor(), &cache);
    }
  }
  return model->hidden_states(ids, mask).narrow(1, columns, T - columns);
}

}  // namespace concord::lm
