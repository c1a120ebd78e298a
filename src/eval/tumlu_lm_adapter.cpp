#include "concord/eval/tumlu_lm_adapter.h"

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
  shared_ = lm::PrefixCache();
  stats_.prefix_tokens = 0;
}

bool CausalLmTumluModel::cache_serves(const std::string& prefix,
                                      const std::vector<int64_t>& prefix_ids) const {
  return !shared_text_.empty() && prefix.compare(0, shared_text_.size(), shared_text_) == 0 &&
         prefix_ids.size() > shared_.tokens.size() && starts_with(prefix_ids, shared_.tokens);
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
  shared_ = lm::encode_prefix(model_, std::move(ids), kItemRoom);
  shared_text_ = candidate;
  stats_.prefix_tokens = shared_.length();
  ++stats_.builds;
}

void CausalLmTumluModel::score_into(const std::vector<Encoded>& encoded,
                                    const std::vector<size_t>& items, bool cached,
                                    std::vector<std::vector<double>>& out) {
  if (items.empty()) return;
  const int64_t past = cached ? shared_.length() : 0;
  std::vector<lm::ScoreRequest> requests;
  requests.reserve(items.size());
  for (size_t i : items) {
    const auto& ids = encoded[i].prefix_ids;
    requests.push_back({std::vector<int64_t>(ids.begin() + past, ids.end()), encoded[i].continuations});
  }
  lm::ScoreOptions so;
  so.pad_token_id = pad_id_;
  if (cached) {
    // Each item's own tokens run once over a copy of the shots' cache, and its options over
    // copies of the item's rows.
    so.share_prompt = true;
    so.batch_size = std::max<int64_t>(1, options_.item_batch_size);
  } else {
    so.batch_size = std::max<int64_t>(1, options_.score_batch_size);
  }
  const auto scores = lm::score_requests(model_, requests, so, cached ? &shared_ : nullptr);
  for (size_t r = 0; r < items.size(); ++r) {
    auto& row = out[items[r]];
    row.clear();
    for (const auto& s : scores[r]) row.push_back(s.sum);
  }
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
  score_into(encoded, cached, /*cached=*/true, out);
  stats_.hits += static_cast<int64_t>(cached.size());
  score_into(encoded, full, /*cached=*/false, out);
  stats_.full_forwards += static_cast<int64_t>(full.size());
  return out;
}

std::vector<double> CausalLmTumluModel::loglik(const std::string& prefix,
                                               const std::vector<std::string>& continuations) {
  return loglik_batch({LoglikRequest{prefix, continuations}}).front();
}

}  // namespace concord::eval
