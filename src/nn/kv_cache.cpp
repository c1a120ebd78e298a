#include "concord/nn/kv_cache.h"

#include <algorithm>

#include "concord/core/error.h"

namespace concord::nn {

std::pair<at::Tensor, at::Tensor> KVCache::append(int64_t layer, const at::Tensor& k,
                                                  const at::Tensor& v) {
  CONCORD_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " out of range [0, ",
                num_layers(), ")");
  TORCH_CHECK(k.dim() == 4 && v.sizes() == k.sizes(),
              "KVCache: keys and values must both be [B, H_kv, T, D], got ", k.sizes(), " and ",
              v.sizes());
  Layer& l = layers_[static_cast<size_t>(layer)];
  const int64_t steps = k.size(2);
  const int64_t need = length_ + steps;
  if (l.k.defined()) {
    TORCH_CHECK(l.k.size(0) == k.size(0) && l.k.size(1) == k.size(1) && l.k.size(3) == k.size(3),
                "KVCache: layer ", layer, " holds [", l.k.size(0), ", ", l.k.size(1), ", *, ",
                l.k.size(3), "] but got keys ", k.sizes());
  } else {
    TORCH_CHECK(length_ == 0, "KVCache: layer ", layer, " is empty but the cache holds ", length_,
                " tokens");
  }
  const int64_t capacity = l.k.defined() ? l.k.size(2) : 0;
  if (need > capacity) {
    const int64_t grown = std::max({need, reserve_, capacity * 2, int64_t{16}});
    at::Tensor nk = at::empty({k.size(0), k.size(1), grown, k.size(3)}, k.options());
    at::Tensor nv = at::empty({v.size(0), v.size(1), grown, v.size(3)}, v.options());
    if (length_ > 0) {
      nk.narrow(2, 0, length_).copy_(l.k.narrow(2, 0, length_));
      nv.narrow(2, 0, length_).copy_(l.v.narrow(2, 0, length_));
    }
    l.k = nk;
    l.v = nv;
  }
  l.k.narrow(2, length_, steps).copy_(k);
  l.v.narrow(2, length_, steps).copy_(v);
  return {l.k.narrow(2, 0, need), l.v.narrow(2, 0, need)};
}

at::Tensor& KVCache::state(int64_t layer) {
  CONCORD_CHECK(layer >= 0 && layer < num_layers(), "KVCache: layer ", layer, " out of range [0, ",
                num_layers(), ")");
  return layers_[static_cast<size_t>(layer)].state;
}

void KVCache::select_rows(const at::Tensor& index) {
  for (auto& l : layers_) {
    if (l.k.defined()) {
      l.k = l.k.index_select(0, index);
      l.v = l.v.index_select(0, index);
    }
    if (l.state.defined()) l.state = l.state.index_select(0, index);
  }
}

void KVCache::clear() {
  for (auto& l : layers_) l = Layer{};
  length_ = 0;
}

}  // namespace concord::nn
