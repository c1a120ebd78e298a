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

// The text two prompts share, cut just after its last blank line: the shots of a TUMLU prompt
// end there, and a cut between blocks is where tokenizers are least likely to merge across.
std::string shared_block_prefix(const std::string& a, const std::string& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t common = 0;
  while (common < n && a[common] == b[common]) ++common;
  if (common < 2) return {};
  const size_t blank = a.rfind("\n\n", common - 2);
  if (blank == std::string::npos) return {};
  return a.substr(0, blank + 2);
}

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

bool CausalLmTumluModel::ensure_shared_prefix(const std::string& prefix,
                                              const std::vector<int64_t>& prefix_ids) {
  const auto usable = [&] {
    return !shared_text_.empty() && prefix.compare(0, shared_text_.size(), shared_text_) == 0 &&
           prefix_ids.size() > shared_ids_.size() && starts_with(prefix_ids, shared_ids_);
  };
  if (usable()) return true;
  // The same prompt again (several continuation sets for one item) shares everything, the
  // item's own blocks too; only text shared by different prompts is worth caching.
  if (prefix == last_prefix_) return false;
  const std::string candidate = shared_block_prefix(prefix, last_prefix_);
  if (static_cast<int64_t>(candidate.size()) < options_.min_prefix_chars ||
      candidate == shared_text_) {
    return false;
  }
  auto ids = prompt_tokens(candidate);
  if (!(prefix_ids.size() > ids.size() && starts_with(prefix_ids, ids))) {
    ++stats_.rejected;
    return false;
  }
  c10::InferenceMode guard;
  nn::KVCache cache = model_->make_cache();
  cache.reserve(static_cast<int64_t>(ids.size()));
  model_->hidden_states(ids_tensor(ids, model_device(model_)), {}, &cache);
  shared_text_ = candidate;
  shared_ids_ = std::move(ids);
  shared_cache_ = std::move(cache);
  stats_.prefix_tokens = static_cast<int64_t>(shared_ids_.size());
  ++stats_.builds;
  return usable();
}

std::vector<double> CausalLmTumluModel::loglik_cached(
    const std::vector<int64_t>& prefix_ids, const std::vector<std::vector<int64_t>>& continuations) {
  c10::InferenceMode guard;
  const auto device = model_device(model_);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const int64_t past = static_cast<int64_t>(shared_ids_.size());

  // A deep copy (index_select) of the shared cache, so this item never writes into it.
  nn::KVCache cache = shared_cache_;
  cache.select_rows(at::zeros({1}, long_opts));
  const std::vector<int64_t> item(prefix_ids.begin() + past, prefix_ids.end());
  const at::Tensor h = model_->hidden_states(ids_tensor(item, device), {}, &cache);
  const at::Tensor first =
      at::log_softmax(model_->logits(h.select(1, h.size(1) - 1)).to(at::kFloat), -1)[0].to(at::kCPU);
  const float* lp0 = first.data_ptr<float>();

  std::vector<double> out(continuations.size());
  std::vector<size_t> longer;  // continuations of more than one token
  for (size_t i = 0; i < continuations.size(); ++i) {
    CONCORD_CHECK(!continuations[i].empty(), "CausalLmTumluModel: empty continuation");
    out[i] = lp0[continuations[i][0]];
    if (continuations[i].size() > 1) longer.push_back(i);
  }
  if (longer.empty()) return out;

  // The rest of each longer continuation, right-padded, continuing from the item's state: row r
  // feeds c[0..n-2] and position t predicts c[t+1].
  const int64_t rows = static_cast<int64_t>(longer.size());
  int64_t width = 0;
  for (size_t i : longer) width = std::max<int64_t>(width, static_cast<int64_t>(continuations[i].size()) - 1);
  std::vector<int64_t> input(static_cast<size_t>(rows * width), pad_id_);
  std::vector<int64_t> mask(static_cast<size_t>(rows * (cache.length() + width)), 1);
  std::vector<int64_t> flat_index, targets;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& c = continuations[longer[static_cast<size_t>(r)]];
    const int64_t n = static_cast<int64_t>(c.size()) - 1;
    for (int64_t t = 0; t < width; ++t) {
      if (t < n) {
        input[static_cast<size_t>(r * width + t)] = c[static_cast<size_t>(t)];
        flat_index.push_back(r * width + t);
        targets.push_back(c[static_cast<size_t>(t + 1)]);
      } else {
        mask[static_cast<size_t>(r * (cache.length() + width) + cache.length() + t)] = 0;
      }
    }
  }
  cache.select_rows(at::zeros({rows}, long_opts));
  const at::Tensor in = at::tensor(input, at::TensorOptions().dtype(at::kLong)).view({rows, width}).to(device);
  const at::Tensor m =
      at::tensor(mask, at::TensorOptions().dtype(at::kLong)).view({rows, cache.length() + width}).to(device);
  const at::Tensor hidden = model_->hidden_states(in, m, &cache).reshape({rows * width, -1});
  const at::Tensor picked = hidden.index_select(0, at::tensor(flat_index, at::TensorOptions().dtype(at::kLong)).to(device));
  const at::Tensor lp = at::log_softmax(model_->logits(picked).to(at::kFloat), -1)
                            .gather(1, at::tensor(targets, at::TensorOptions().dtype(at::kLong))
                                           .to(device)
                                           .unsqueeze(1))
                            .squeeze(1)
                            .to(at::kCPU);
  const float* v = lp.data_ptr<float>();
  size_t k = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto& c = continuations[longer[static_cast<size_t>(r)]];
    for (size_t t = 1; t < c.size(); ++t) out[longer[static_cast<size_t>(r)]] += v[k++];
  }
  return out;
}

std::vector<double> CausalLmTumluModel::loglik(const std::string& prefix,
                                               const std::vector<std::string>& continuations) {
  CONCORD_CHECK(!prefix.empty(), "CausalLmTumluModel::loglik: empty prefix");
  if (continuations.empty()) return {};
  const auto prefix_ids = prompt_tokens(prefix);
  CONCORD_CHECK(!prefix_ids.empty(), "CausalLmTumluModel::loglik: the prefix encodes to no tokens");
  std::vector<std::vector<int64_t>> conts;
  conts.reserve(continuations.size());
  for (const auto& c : continuations) conts.push_back(continuation_tokens(prefix_ids, prefix, c));

  const bool cached = options_.prefix_cache && ensure_shared_prefix(prefix, prefix_ids);
  last_prefix_ = prefix;
  if (cached) {
    ++stats_.hits;
    return loglik_cached(prefix_ids, conts);
  }
  ++stats_.full_forwards;
  lm::ScoreOptions so;
  so.batch_size = std::max<int64_t>(1, options_.score_batch_size);
  so.pad_token_id = pad_id_;
  const auto scores = lm::score_continuations(
      model_, std::vector<std::vector<int64_t>>(conts.size(), prefix_ids), conts, so);
  std::vector<double> out;
  out.reserve(scores.size());
  for (const auto& s : scores) out.push_back(s.sum);
  return out;
}

}  // namespace concord::eval
