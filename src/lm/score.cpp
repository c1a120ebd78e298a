#include "concord/lm/score.h"

#include <algorithm>
#include <numeric>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"

namespace concord::lm {

at::Tensor token_logprobs(CausalLM model, const at::Tensor& input_ids,
                          const at::Tensor& attention_mask, const at::Tensor& target_mask) {
  CONCORD_CHECK(input_ids.dim() == 2 && input_ids.size(1) >= 2,
                "token_logprobs: input_ids must be [B, T] with T >= 2, got ", input_ids.sizes());
  const int64_t steps = input_ids.size(1);
  const at::Tensor hidden = model->hidden_states(input_ids, attention_mask);
  const at::Tensor logp =
      at::log_softmax(model->logits(hidden.narrow(1, 0, steps - 1)).to(at::kFloat), -1);
  const at::Tensor targets = input_ids.to(logp.device()).to(at::kLong).narrow(1, 1, steps - 1);
  at::Tensor out = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1);
  if (target_mask.defined()) {
    CONCORD_CHECK(target_mask.sizes() == input_ids.sizes(),
                  "token_logprobs: target_mask must have input_ids' shape ", input_ids.sizes(),
                  ", got ", target_mask.sizes());
    out = out * target_mask.to(out.device()).narrow(1, 1, steps - 1).to(at::kFloat);
  }
  return out;
}

namespace {

std::vector<ContinuationScore> score_continuations_impl(
    CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<std::vector<int64_t>>& continuations, const ScoreOptions& options) {
  CONCORD_CHECK(prompts.size() == continuations.size(), "score_continuations: ", prompts.size(),
                " prompts but ", continuations.size(), " continuations");
  CONCORD_CHECK(options.batch_size > 0, "score_continuations: batch_size must be positive, got ",
                options.batch_size);
  const size_t n = prompts.size();
  for (size_t i = 0; i < n; ++i) {
    CONCORD_CHECK(!prompts[i].empty(), "score_continuations: prompt ", i,
                  " is empty (the first continuation token needs a context; add a BOS token)");
  }
  c10::InferenceMode inference;
  std::vector<ContinuationScore> results(n);
  // Longest first, so each batch pads little.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  auto total = [&](size_t i) { return prompts[i].size() + continuations[i].size(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return total(a) > total(b); });
  const c10::Device device = model->embed->weight.device();
  const size_t chunk = static_cast<size_t>(options.batch_size);
  for (size_t start = 0; start < n; start += chunk) {
    const size_t end = std::min(n, start + chunk);
    const int64_t batch = static_cast<int64_t>(end - start);
    const int64_t steps = static_cast<int64_t>(total(order[start]));
    at::Tensor ids = at::full({batch, steps}, options.pad_token_id, at::kLong);
    at::Tensor mask = at::zeros({batch, steps}, at::kLong);
    std::vector<int64_t> rows_index, targets;  // flattened [B*T] positions and their targets
    auto ids_a = ids.accessor<int64_t, 2>();
    auto mask_a = mask.accessor<int64_t, 2>();
    for (int64_t b = 0; b < batch; ++b) {
      const size_t i = order[start + static_cast<size_t>(b)];
      const auto& p = prompts[i];
      const auto& c = continuations[i];
      int64_t t = 0;
      for (int64_t tok : p) {
        ids_a[b][t] = tok;
        mask_a[b][t++] = 1;
      }
      for (int64_t tok : c) {
        rows_index.push_back(b * steps + t - 1);  // the position that predicts this token
        targets.push_back(tok);
        ids_a[b][t] = tok;
        mask_a[b][t++] = 1;
      }
    }
    if (targets.empty()) continue;
    const at::Tensor hidden = model->hidden_states(ids.to(device), mask.to(device));
    const at::Tensor index = at::tensor(rows_index, at::kLong).to(device);
    const at::Tensor picked = hidden.reshape({batch * steps, hidden.size(2)}).index_select(0, index);
    const at::Tensor logp = at::log_softmax(model->logits(picked).to(at::kFloat), -1);
    const at::Tensor target = at::tensor(targets, at::kLong).to(device);
    const at::Tensor lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).to(at::kDouble).cpu();
    const at::Tensor is_top = (logp.argmax(-1) == target).cpu();
    auto lp_a = lp.accessor<double, 1>();
    auto top_a = is_top.accessor<bool, 1>();
    int64_t k = 0;
    for (int64_t b = 0; b < batch; ++b) {
      const size_t i = order[start + static_cast<size_t>(b)];
      ContinuationScore& s = results[i];
      for (size_t t = 0; t < continuations[i].size(); ++t, ++k) {
        s.token_logprobs.push_back(lp_a[k]);
        s.sum += lp_a[k];
        s.greedy = s.greedy && top_a[k];
      }
      if (!s.token_logprobs.empty()) s.mean = s.sum / static_cast<double>(s.token_logprobs.size());
    }
  }
  return results;
}

}  // namespace

std::vector<ContinuationScore> score_continuations(
    CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<std::vector<int64_t>>& continuations, const ScoreOptions& options) {
  return translate_torch_errors("lm::score_continuations", [&] {
    return score_continuations_impl(std::move(model), prompts, continuations, options);
  });
}

std::vector<ContinuationScore> score_texts(CausalLM model, const text::Tokenizer& tokenizer,
                                           const std::vector<std::string>& prompts,
                                           const std::vector<std::string>& continuations,
                                           const ScoreOptions& options) {
  CONCORD_CHECK(prompts.size() == continuations.size(), "score_texts: ", prompts.size(),
                " prompts but ", continuations.size(), " continuations");
  std::vector<std::vector<int64_t>> p, c;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto pe = tokenizer.encode(prompts[i], /*add_special_tokens=*/true);
    const auto ce = tokenizer.encode(continuations[i], /*add_special_tokens=*/false);
    p.emplace_back(pe.begin(), pe.end());
    c.emplace_back(ce.begin(), ce.end());
  }
  ScoreOptions o = options;
  if (auto pad = tokenizer.pad_id(); pad && *pad < model->config.vocab_size) o.pad_token_id = *pad;
  return score_continuations(std::move(model), p, c, o);
}

}  // namespace concord::lm
