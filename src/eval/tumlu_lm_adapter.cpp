#include "concord/eval/tumlu_lm_adapter.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <utility>

#include "concord/core/error.h"
#include "concord/lm/generate.h"
#include "concord/lm/score.h"

namespace concord::eval {

namespace {

std::vector<int64_t> to_int64(const std::vector<text::TokenId>& ids) {
  return std::vector<int64_t>(ids.begin(), ids.end());
}

bool starts_with(const std::vector<int64_t>& whole, const std::vector<int64_t>& head) {
  return head.size() <= whole.size() && std::equal(head.begin(), head.end(), whole.begin());
}

size_t common_prefix_length(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t common = 0;
  while (common < n && a[common] == b[common]) ++common;
  return common;
}

// The first `common` characters of `text` (text that prompts share), cut just after its last
// blank line: the shots of a TUMLU prompt end there, and a cut between blocks is where
// tokenizers are least likely to merge across.
std::string shared_block_prefix(const std::string& text, size_t common) {
  if (common < 2) return {};
  const size_t blank = text.rfind("\n\n", common - 2);
  if (blank == std::string::npos) return {};
  return text.substr(0, blank + 2);
}

// Room for the items' own tokens in the shared cache's buffers, so a copy of it takes an item
// without growing (and copying) again.
constexpr int64_t kItemRoom = 256;

c10::Device model_device(const lm::CausalLM& model) {
  for (const auto& p : model->parameters()) return p.device();
  return c10::Device(c10::kCPU);
}

at::Tensor ids_tensor(const std::vector<int64_t>& ids, c10::Device device) {
  return at::tensor(ids, at::TensorOptions().dtype(at::kLong)).view({1, -1}).to(device);
}

}  // namespace

CausalLmTumluModel::CausalLmTumluModel(lm::CausalLM model,
                                       std::shared_ptr<const text::Tokenizer> tokenizer,
                                       CausalLmTumluOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  CONCORD_CHECK(model_, "CausalLmTumluModel: no model");
  CONCORD_CHECK(tokenizer_ != nullptr, "CausalLmTumluModel: no tokenizer");
  CONCORD_CHECK(tokenizer_->vocab_size() <= model_->config.vocab_size,
                "CausalLmTumluModel: the tokenizer's ", tokenizer_->vocab_size(),
                " ids do not fit the model's vocabulary of ", model_->config.vocab_size);
  // Padding is never attended nor scored; any valid id will do.
  if (model_->config.pad_token_id) {
    pad_id_ = *model_->config.pad_token_id;
  } else if (model_->config.eos_token_id) {
    pad_id_ = *model_->config.eos_token_id;
  }
}

std::vector<std::string> CausalLmTumluModel::generate(const std::vector<std::string>& prompts,
                                                      const std::vector<std::string>& stop_strings,
                                                      int64_t max_new_tokens) {
  if (prompts.empty()) return {};
  lm::GenerationOptions g;
  g.max_new_tokens = max_new_tokens;
  g.do_sample = false;
  g.stop_strings = stop_strings;
  g.batch_size = options_.generate_batch_size;
  const auto generations = lm::generate_text(model_, *tokenizer_, prompts, g);
  std::vector<std::string> out;
  out.reserve(generations.size());
  for (const auto& gen : generations) out.push_back(gen.text);
  return out;
}

std::vector<int64_t> CausalLmTumluModel::prompt_tokens(const std::string& text) const {
  return to_int64(tokenizer_->encode(text, /*add_special_tokens=*/true));
}

std::vector<int64_t> CausalLmTumluModel::continuation_tokens(const std::vector<int64_t>& prefix_ids,
                                                             const std::string& prefix,
                                                             const std::string& continuation) const {
  // The harness's _encode_pair: whole = encode(context + continuation), continuation =
  // whole[len(encode(context)):]. Only when the whole is not longer (a merge swallowed the
  // continuation) is the continuation encoded alone, so it is never empty.
  const auto whole = prompt_tokens(prefix + continuation);
  if (whole.size() > prefix_ids.size()) {
    return std::vector<int64_t>(whole.begin() + static_cast<std::ptrdiff_t>(prefix_ids.size()),
                                whole.end());
  }
  return to_int64(tokenizer_->encode(continuation, false));
}

void CausalLmTumluModel::reset_prefix_cache() {
  last_prefix_.clear();
  shared_text_.clear();
  shared_ids_.clear();
  shared_cache_ = nn::KVCache();
  stats_.prefix_tokens = 0;
}

bool CausalLmTumluModel::cache_serves(const std::string& prefix,
                                      const std::vector<int64_t>& prefix_ids) const {
  return !shared_text_.empty() && prefix.compare(0, shared_text_.size(), shared_text_) == 0 &&
         prefix_ids.size() > shared_ids_.size() && starts_with(prefix_ids, shared_ids_);
}

void CausalLmTumluModel::ensure_shared_prefix(const std::vector<LoglikRequest>& requests,
                                              const std::vector<Encoded>& encoded) {
  bool served = true;
  for (size_t i = 0; i < requests.size() && served; ++i) {
    served = cache_serves(requests[i].prefix, encoded[i].prefix_ids);
  }
  if (served) return;
  // The text the requests share. Different prompts in the call share it among themselves; one
  // prompt alone is compared with the previous call's. The same prompt again (several
  // continuation sets for one item) shares everything, the item's own blocks too; only text
  // shared by different prompts is worth caching.
  const std::string& first = requests.front().prefix;
  size_t common = first.size();
  bool distinct = false;
  for (size_t i = 1; i < requests.size(); ++i) {
    if (requests[i].prefix == first) continue;
    distinct = true;
    common = std::min(common, common_prefix_length(first, requests[i].prefix));
  }
  if (!distinct) {
    if (last_prefix_.empty() || first == last_prefix_) return;
    common = common_prefix_length(first, last_prefix_);
  }
  const std::string candidate = shared_block_prefix(first, common);
  if (static_cast<int64_t>(candidate.size()) < options_.min_prefix_chars ||
      candidate == shared_text_) {
    return;
  }
  auto ids = prompt_tokens(candidate);
  const auto& first_ids = encoded.front().prefix_ids;
  if (!(first_ids.size() > ids.size() && starts_with(first_ids, ids))) {
    ++stats_.rejected;
    return;
  }
  c10::InferenceMode guard;
  nn::KVCache cache = model_->make_cache();
  cache.reserve(static_cast<int64_t>(ids.size()) + kItemRoom);
  model_->hidden_states(ids_tensor(ids, model_device(model_)), {}, &cache);
  shared_text_ = candidate;
  shared_ids_ = std::move(ids);
  shared_cache_ = std::move(cache);
  stats_.prefix_tokens = static_cast<int64_t>(shared_ids_.size());
  ++stats_.builds;
}

void CausalLmTumluModel::loglik_cached(const std::vector<Encoded>& encoded,
                                       const std::vector<size_t>& items,
                                       std::vector<std::vector<double>>& out) {
  c10::InferenceMode guard;
  const auto device = model_device(model_);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const auto cpu_long = at::TensorOptions().dtype(at::kLong);
  const int64_t past = static_cast<int64_t>(shared_ids_.size());
  const int64_t rows = static_cast<int64_t>(items.size());

  // Each item's own tokens (after the shared prefix), right-padded to the longest.
  std::vector<int64_t> lengths;
  int64_t width = 0;
  for (size_t i : items) {
    lengths.push_back(static_cast<int64_t>(encoded[i].prefix_ids.size()) - past);
    width = std::max(width, lengths.back());
  }
  std::vector<int64_t> input(static_cast<size_t>(rows * width), pad_id_);
  std::vector<int64_t> last(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const auto& ids = encoded[items[static_cast<size_t>(r)]].prefix_ids;
    std::copy(ids.begin() + past, ids.end(), input.begin() + r * width);
    last[static_cast<size_t>(r)] = r * width + lengths[static_cast<size_t>(r)] - 1;
  }
  // A deep copy (index_select) of the shared cache per row, so no item writes into it. No mask:
  // padding only follows an item's tokens, and causal attention never looks ahead.
  nn::KVCache cache = shared_cache_;
  cache.select_rows(at::zeros({rows}, long_opts));
  const at::Tensor h = model_->hidden_states(
      at::tensor(input, cpu_long).view({rows, width}).to(device), {}, &cache);
  const at::Tensor at_last = h.reshape({rows * width, -1}).index_select(0, at::tensor(last, cpu_long).to(device));
  const at::Tensor first =
      at::log_softmax(model_->logits(at_last).to(at::kFloat), -1).to(at::kCPU).contiguous();
  const int64_t vocab = first.size(1);

  for (int64_t r = 0; r < rows; ++r) {
    const size_t item = items[static_cast<size_t>(r)];
    const auto& conts = encoded[item].continuations;
    const float* lp0 = first.data_ptr<float>() + r * vocab;
    auto& scores = out[item];
    scores.assign(conts.size(), 0.0);
    std::vector<size_t> longer;  // continuations of more than one token
    for (size_t i = 0; i < conts.size(); ++i) {
      CONCORD_CHECK(!conts[i].empty(), "CausalLmTumluModel: empty continuation");
      scores[i] = lp0[conts[i][0]];
      if (conts[i].size() > 1) longer.push_back(i);
    }
    if (longer.empty()) continue;

    // The rest of each longer continuation, right-padded, continuing from this item's row: row c
    // feeds cont[0..n-2] and position t predicts cont[t+1]. The mask hides the item's own padding
    // (positions past + length .. past + width) and the continuations' padding; positions come
    // from the mask, so the first continuation token sits at past + length.
    const int64_t crows = static_cast<int64_t>(longer.size());
    int64_t cwidth = 0;
    for (size_t i : longer) cwidth = std::max<int64_t>(cwidth, static_cast<int64_t>(conts[i].size()) - 1);
    const int64_t span = cache.length() + cwidth;
    const int64_t length = lengths[static_cast<size_t>(r)];
    std::vector<int64_t> cinput(static_cast<size_t>(crows * cwidth), pad_id_);
    std::vector<int64_t> mask(static_cast<size_t>(crows * span), 1);
    std::vector<int64_t> flat_index, targets;
    for (int64_t c = 0; c < crows; ++c) {
      const auto& cont = conts[longer[static_cast<size_t>(c)]];
      const int64_t n = static_cast<int64_t>(cont.size()) - 1;
      for (int64_t t = past + length; t < past + width; ++t) mask[static_cast<size_t>(c * span + t)] = 0;
      for (int64_t t = 0; t < cwidth; ++t) {
        if (t < n) {
          cinput[static_cast<size_t>(c * cwidth + t)] = cont[static_cast<size_t>(t)];
          flat_index.push_back(c * cwidth + t);
          targets.push_back(cont[static_cast<size_t>(t + 1)]);
        } else {
          mask[static_cast<size_t>(c * span + cache.length() + t)] = 0;
        }
      }
    }
    nn::KVCache row_cache = cache;
    row_cache.select_rows(at::full({crows}, r, long_opts));
    const at::Tensor hidden =
        model_->hidden_states(at::tensor(cinput, cpu_long).view({crows, cwidth}).to(device),
                              at::tensor(mask, cpu_long).view({crows, span}).to(device), &row_cache)
            .reshape({crows * cwidth, -1});
    const at::Tensor picked = hidden.index_select(0, at::tensor(flat_index, cpu_long).to(device));
    const at::Tensor lp = at::log_softmax(model_->logits(picked).to(at::kFloat), -1)
                              .gather(1, at::tensor(targets, cpu_long).to(device).unsqueeze(1))
                              .squeeze(1)
                              .to(at::kCPU)
                              .contiguous();
    const float* v = lp.data_ptr<float>();
    size_t k = 0;
    for (int64_t c = 0; c < crows; ++c) {
      const auto& cont = conts[longer[static_cast<size_t>(c)]];
      for (size_t t = 1; t < cont.size(); ++t) scores[longer[static_cast<size_t>(c)]] += v[k++];
    }
  }
}

std::vector<double> CausalLmTumluModel::loglik_full(const Encoded& encoded) {
  lm::ScoreOptions so;
  so.batch_size = std::max<int64_t>(1, options_.score_batch_size);
  so.pad_token_id = pad_id_;
  const auto scores = lm::score_continuations(
      model_, std::vector<std::vector<int64_t>>(encoded.continuations.size(), encoded.prefix_ids),
      encoded.continuations, so);
  std::vector<double> out;
  out.reserve(scores.size());
  for (const auto& s : scores) out.push_back(s.sum);
  return out;
}

std::vector<std::vector<double>> CausalLmTumluModel::loglik_batch(
    const std::vector<LoglikRequest>& requests) {
  std::vector<std::vector<double>> out(requests.size());
  if (requests.empty()) return out;
  std::vector<Encoded> encoded(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    CONCORD_CHECK(!r.prefix.empty(), "CausalLmTumluModel::loglik: empty prefix");
    encoded[i].prefix_ids = prompt_tokens(r.prefix);
    CONCORD_CHECK(!encoded[i].prefix_ids.empty(),
                  "CausalLmTumluModel::loglik: the prefix encodes to no tokens");
    for (const auto& c : r.continuations) {
      encoded[i].continuations.push_back(continuation_tokens(encoded[i].prefix_ids, r.prefix, c));
    }
  }
  if (options_.prefix_cache) ensure_shared_prefix(requests, encoded);
  last_prefix_ = requests.back().prefix;

  std::vector<size_t> cached, full;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (requests[i].continuations.empty()) continue;
    const bool hit = options_.prefix_cache && cache_serves(requests[i].prefix, encoded[i].prefix_ids);
    (hit ? cached : full).push_back(i);
  }
  // Longest first, so each chunk pads its items to nearly their own length: in a subject's
  // order the longest of a chunk sets the width of all of them (about a third of the positions
  // were padding on TUMLU-mini).
  std::stable_sort(cached.begin(), cached.end(), [&](size_t a, size_t b) {
    return encoded[a].prefix_ids.size() > encoded[b].prefix_ids.size();
  });
  const size_t chunk = static_cast<size_t>(std::max<int64_t>(1, options_.item_batch_size));
  for (size_t start = 0; start < cached.size(); start += chunk) {
    const std::vector<size_t> items(cached.begin() + static_cast<std::ptrdiff_t>(start),
                                    cached.begin() + static_cast<std::ptrdiff_t>(std::min(cached.size(), start + chunk)));
    loglik_cached(encoded, items, out);
    stats_.hits += static_cast<int64_t>(items.size());
  }
  for (size_t i : full) {
    out[i] = loglik_full(encoded[i]);
    ++stats_.full_forwards;
  }
  return out;
}

std::vector<double> CausalLmTumluModel::loglik(const std::string& prefix,
                                               const std::vector<std::string>& continuations) {
  return loglik_batch({LoglikRequest{prefix, continuations}}).front();
}

}  // namespace concord::eval
