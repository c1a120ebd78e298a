#include "concord/lm/score.h"

#include <algorithm>
#include <utility>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "score_batch.h"

namespace concord::lm {

using detail::PadSide;
using detail::Row;
using detail::span_of;

namespace {

// A share_prompt chunk holds at most this many batches of continuations: more gives the
// length sort more to choose from, but the chunk's prompts then differ more in length, and every
// continuation attends over its chunk's prompt padding.
constexpr int64_t kChunkBatches = 4;

using Results = std::vector<std::vector<ContinuationScore>>;

c10::Device device_of(CausalLM& model) { return model->embed->weight.device(); }

// Writes K scored tokens into the results: token `token[k]` of continuation `where[k]`, and
// whether it was the argmax (`greedy`, when defined).
void store(Results& out, const std::vector<std::pair<size_t, size_t>>& where,
           const std::vector<int64_t>& token, const at::Tensor& logprobs, const at::Tensor& greedy) {
  const at::Tensor lp = logprobs.to(at::kDouble).cpu().contiguous();
  const double* v = lp.data_ptr<double>();
  const at::Tensor top = greedy.defined() ? greedy.contiguous() : at::Tensor();
  const bool* g = top.defined() ? top.data_ptr<bool>() : nullptr;
  for (size_t k = 0; k < where.size(); ++k) {
    ContinuationScore& s = out[where[k].first][where[k].second];
    s.token_logprobs[static_cast<size_t>(token[k])] = v[k];
    if (g != nullptr) s.greedy = s.greedy && g[k];
  }
}

// Plain layout: each (prompt, continuation) pair a row, longest first.
void score_plain(CausalLM& model, const std::vector<ScoreRequest>& requests,
                 const ScoreOptions& options, const PrefixCache* prefix, Results& out) {
  struct Pair {
    size_t request, cont;
    size_t length;
  };
  std::vector<Pair> pairs;
  for (size_t i = 0; i < requests.size(); ++i) {
    for (size_t k = 0; k < requests[i].continuations.size(); ++k) {
      const size_t c = requests[i].continuations[k].size();
      if (c > 0) pairs.push_back({i, k, requests[i].prompt.size() + c});
    }
  }
  std::stable_sort(pairs.begin(), pairs.end(),
                   [](const Pair& a, const Pair& b) { return a.length > b.length; });
  const size_t chunk = static_cast<size_t>(options.batch_size);
  for (size_t start = 0; start < pairs.size(); start += chunk) {
    const size_t end = std::min(pairs.size(), start + chunk);
    std::vector<Row> rows;
    std::vector<std::pair<size_t, size_t>> where;
    std::vector<int64_t> token;
    for (size_t p = start; p < end; ++p) {
      const ScoreRequest& r = requests[pairs[p].request];
      const auto& cont = r.continuations[pairs[p].cont];
      rows.push_back({span_of(r.prompt), span_of(cont)});
      for (size_t t = 0; t < cont.size(); ++t) {
        where.emplace_back(pairs[p].request, pairs[p].cont);
        token.push_back(static_cast<int64_t>(t));
      }
    }
    at::Tensor greedy;
    const at::Tensor lp = detail::score_pair_rows(model, rows, options.pad_token_id, prefix,
                                                  options.greedy ? &greedy : nullptr);
    store(out, where, token, lp, greedy);
  }
}

// share_prompt layout, one chunk: the prompts of `chunk` run once into a KV cache (after the
// prefix); the first token of every continuation is scored from its prompt's last state, the
// rest of the continuations run over copies of the cache rows of their prompts.
void score_chunk(CausalLM& model, const std::vector<ScoreRequest>& requests,
                 const std::vector<size_t>& chunk, const ScoreOptions& options,
                 const PrefixCache* prefix, PadSide prompt_side, Results& out) {
  const c10::Device device = device_of(model);
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const int64_t n = static_cast<int64_t>(chunk.size());
  std::vector<Row> prompt_rows;
  int64_t longest_rest = 0;  // continuation tokens fed after the prompt: all but the last
  for (size_t i : chunk) {
    prompt_rows.push_back({span_of(requests[i].prompt), {}});
    for (const auto& c : requests[i].continuations) {
      longest_rest = std::max(longest_rest, static_cast<int64_t>(c.size()) - 1);
    }
  }
  const detail::PaddedRows prompts = detail::pad_rows(prompt_rows, prompt_side, options.pad_token_id);
  const int64_t past = prefix != nullptr ? prefix->length() : 0;
  nn::KVCache cache = model->make_cache();
  if (prefix != nullptr) {
    cache = prefix->cache;
    cache.select_rows(at::zeros({n}, long_opts.device(device)));
  }
  // Room for the longest continuation, so its copies append without growing.
  cache.reserve(past + prompts.width + longest_rest);
  const at::Tensor hidden = detail::run_rows(model, prompts, &cache, {});
  const int64_t dim = hidden.size(2);

  // The keys a continuation may read: the prefix and its prompt's tokens.
  at::Tensor key_mask;
  if (prompts.padded) {
    key_mask = past > 0 ? at::cat({at::ones({n, past}, at::kLong), prompts.mask}, 1) : prompts.mask;
  }

  // First tokens, from the state at each prompt's last token.
  std::vector<int64_t> last, state_of, targets, token;
  std::vector<std::pair<size_t, size_t>> where;
  struct Rest {
    int64_t row;  // prompt row in the chunk
    size_t request, cont;
    int64_t length;  // tokens fed: |c| - 1
  };
  std::vector<Rest> rest;
  for (int64_t g = 0; g < n; ++g) {
    const size_t i = chunk[static_cast<size_t>(g)];
    last.push_back(g * prompts.width + prompts.begin[static_cast<size_t>(g)] +
                   static_cast<int64_t>(requests[i].prompt.size()) - 1);
    for (size_t k = 0; k < requests[i].continuations.size(); ++k) {
      const auto& c = requests[i].continuations[k];
      if (c.empty()) continue;
      state_of.push_back(g);
      targets.push_back(c[0]);
      where.emplace_back(i, k);
      token.push_back(0);
      if (c.size() > 1) rest.push_back({g, i, k, static_cast<int64_t>(c.size()) - 1});
    }
  }
  {
    const at::Tensor states =
        hidden.reshape({n * prompts.width, dim}).index_select(0, at::tensor(last, long_opts).to(device));
    at::Tensor greedy;
    const at::Tensor lp = detail::pick_logprobs(model, states, at::tensor(state_of, long_opts),
                                                at::tensor(targets, long_opts),
                                                options.greedy ? &greedy : nullptr);
    store(out, where, token, lp, greedy);
  }

  // The rest, longest first, batch_size rows at a time; right padding trails them.
  std::stable_sort(rest.begin(), rest.end(),
                   [](const Rest& a, const Rest& b) { return a.length > b.length; });
  const size_t batch = static_cast<size_t>(options.batch_size);
  for (size_t start = 0; start < rest.size(); start += batch) {
    const size_t end = std::min(rest.size(), start + batch);
    const int64_t rows_n = static_cast<int64_t>(end - start);
    std::vector<Row> rows;
    std::vector<int64_t> prompt_row;
    for (size_t q = start; q < end; ++q) {
      rows.push_back({span_of(requests[rest[q].request].continuations[rest[q].cont], 1), {}});
      prompt_row.push_back(rest[q].row);
    }
    const detail::PaddedRows conts = detail::pad_rows(rows, PadSide::right, options.pad_token_id);
    const at::Tensor index = at::tensor(prompt_row, long_opts);
    // A copy of the chunk's cache with this batch's prompt rows (select_rows builds new buffers,
    // so the chunk's cache stays as it was for the next batch).
    nn::KVCache rows_cache = cache;
    rows_cache.select_rows(index.to(device));
    const at::Tensor h = detail::run_rows(
        model, conts, &rows_cache, key_mask.defined() ? key_mask.index_select(0, index) : at::Tensor());
    // Column t predicts continuation token t + 1.
    std::vector<int64_t> picks;
    targets.clear();
    where.clear();
    token.clear();
    for (int64_t r = 0; r < rows_n; ++r) {
      const Rest& q = rest[start + static_cast<size_t>(r)];
      const auto& c = requests[q.request].continuations[q.cont];
      for (int64_t t = 0; t < q.length; ++t) {
        picks.push_back(r * conts.width + t);
        targets.push_back(c[static_cast<size_t>(t + 1)]);
        where.emplace_back(q.request, q.cont);
        token.push_back(t + 1);
      }
    }
    const at::Tensor states = h.reshape({rows_n * conts.width, dim})
                                  .index_select(0, at::tensor(picks, long_opts).to(device));
    at::Tensor greedy;
    const at::Tensor lp = detail::pick_logprobs(model, states, {}, at::tensor(targets, long_opts),
                                                options.greedy ? &greedy : nullptr);
    store(out, where, token, lp, greedy);
  }
}

// share_prompt layout: requests in chunks of similar prompt length, longest first.
void score_shared(CausalLM& model, const std::vector<ScoreRequest>& requests,
                  const ScoreOptions& options, const PrefixCache* prefix, Results& out) {
  const int64_t past = prefix != nullptr ? prefix->length() : 0;
  std::vector<size_t> order;
  std::vector<int64_t> scored(requests.size(), 0);  // non-empty continuations per request
  int64_t longest_row = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    for (const auto& c : requests[i].continuations) {
      if (c.empty()) continue;
      ++scored[i];
      longest_row = std::max(longest_row, past + static_cast<int64_t>(requests[i].prompt.size() + c.size()));
    }
    if (scored[i] > 0) order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return requests[a].prompt.size() > requests[b].prompt.size();
  });
  // Where padding goes (score.h): right-padded prompts need no mask in the prompt pass; models
  // that see columns take them left-padded, and after a prefix in chunks of one prompt length.
  const bool columns = detail::window_in_reach(model, longest_row) || detail::carries_state(model);
  const PadSide prompt_side = columns ? PadSide::left : PadSide::right;
  const bool one_length = columns && prefix != nullptr;
  const int64_t budget = kChunkBatches * options.batch_size;
  std::vector<size_t> chunk;
  int64_t chunk_rows = 0;
  for (size_t k = 0; k <= order.size(); ++k) {
    const bool flush =
        !chunk.empty() &&
        (k == order.size() || static_cast<int64_t>(chunk.size()) == options.batch_size ||
         chunk_rows + scored[order[k]] > budget ||
         (one_length && requests[order[k]].prompt.size() != requests[chunk.front()].prompt.size()));
    if (flush) {
      score_chunk(model, requests, chunk, options, prefix, prompt_side, out);
      chunk.clear();
      chunk_rows = 0;
    }
    if (k == order.size()) break;
    chunk.push_back(order[k]);
    chunk_rows += scored[order[k]];
  }
}

}  // namespace

PrefixCache encode_prefix(CausalLM model, std::vector<int64_t> tokens, int64_t room) {
  CONCORD_CHECK(!tokens.empty(), "encode_prefix: no tokens");
  CONCORD_CHECK(room >= 0, "encode_prefix: room must be >= 0, got ", room);
  c10::InferenceMode guard;
  PrefixCache prefix;
  prefix.cache = model->make_cache();
  prefix.cache.reserve(static_cast<int64_t>(tokens.size()) + room);
  const at::Tensor ids = at::tensor(tokens, at::kLong).view({1, -1}).to(device_of(model));
  model->hidden_states(ids, {}, &prefix.cache);
  prefix.tokens = std::move(tokens);
  return prefix;
}

std::vector<std::vector<ContinuationScore>> score_requests(CausalLM model,
                                                           const std::vector<ScoreRequest>& requests,
                                                           const ScoreOptions& options,
                                                           const PrefixCache* prefix) {
  CONCORD_CHECK(options.batch_size > 0, "score_requests: batch_size must be positive, got ",
                options.batch_size);
  if (prefix != nullptr) {
    CONCORD_CHECK(!prefix->empty() && prefix->cache.length() == prefix->length() &&
                      prefix->cache.num_layers() == model->config.num_layers,
                  "score_requests: the prefix cache holds ", prefix->cache.length(), " positions of ",
                  prefix->cache.num_layers(), " layers for ", prefix->length(),
                  " tokens; build it with encode_prefix on this model (",
                  model->config.num_layers, " layers)");
  }
  Results out(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    CONCORD_CHECK(!requests[i].prompt.empty(), "score_requests: request ", i,
                  " has an empty prompt (the first continuation token needs a context; add a BOS "
                  "token)");
    // Greedy until a token says otherwise, when asked; false when not found.
    out[i].assign(requests[i].continuations.size(), ContinuationScore{{}, 0.0, 0.0, options.greedy});
    for (size_t k = 0; k < requests[i].continuations.size(); ++k) {
      out[i][k].token_logprobs.assign(requests[i].continuations[k].size(), 0.0);
    }
  }
  {
    c10::InferenceMode inference;
    if (options.share_prompt) {
      score_shared(model, requests, options, prefix, out);
    } else {
      score_plain(model, requests, options, prefix, out);
    }
  }
  for (auto& scores : out) {
    for (auto& s : scores) {
      for (double v : s.token_logprobs) s.sum += v;
      if (!s.token_logprobs.empty()) s.mean = s.sum / static_cast<double>(s.token_logprobs.size());
    }
  }
  return out;
}

namespace {

std::vector<ContinuationScore> score_continuations_impl(
    CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
    const std::vector<std::vector<int64_t>>& continuations, const ScoreOptions& options) {
  CONCORD_CHECK(prompts.size() == continuations.size(), "score_continuations: ", prompts.size(),
                " prompts but ", continuations.size(), " continuations");
  std::vector<ScoreRequest> requests;
  requests.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back({prompts[i], {continuations[i]}});
  auto scores = score_requests(std::move(model), requests, options);
  std::vector<ContinuationScore> out;
  out.reserve(scores.size());
  for (auto& s : scores) out.push_back(std::move(s.front()));
  return out;
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

ContinuationLogprobs continuation_logprobs(CausalLM model,
                                           const std::vector<std::vector<int64_t>>& prompts,
                                           const std::vector<std::vector<int64_t>>& continuations,
                                           int64_t pad_token_id) {
  CONCORD_CHECK(prompts.size() == continuations.size(), "continuation_logprobs: ", prompts.size(),
                " prompts but ", continuations.size(), " continuations");
  const int64_t n = static_cast<int64_t>(prompts.size());
  int64_t longest = 0;
  std::vector<Row> rows;
  for (size_t i = 0; i < prompts.size(); ++i) {
    CONCORD_CHECK(!prompts[i].empty(), "continuation_logprobs: prompt ", i,
                  " is empty (the first continuation token needs a context; add a BOS token)");
    longest = std::max(longest, static_cast<int64_t>(continuations[i].size()));
    rows.push_back({span_of(prompts[i]), span_of(continuations[i])});
  }
  const c10::Device device = device_of(model);
  at::Tensor mask = at::zeros({n, longest}, at::kFloat);
  std::vector<int64_t> slot;  // flat [R, Tc] position of each scored token
  for (int64_t r = 0; r < n; ++r) {
    const int64_t len = static_cast<int64_t>(continuations[static_cast<size_t>(r)].size());
    mask[r].narrow(0, 0, len).fill_(1.0);
    for (int64_t t = 0; t < len; ++t) slot.push_back(r * longest + t);
  }
  ContinuationLogprobs out;
  out.mask = mask.to(device);
  if (slot.empty()) {
    const bool wide = model->embed->weight.scalar_type() == at::kDouble;
    out.logprobs = at::zeros({n, longest}, at::TensorOptions().dtype(wide ? at::kDouble : at::kFloat).device(device));
    return out;
  }
  const at::Tensor lp = detail::score_pair_rows(model, rows, pad_token_id, nullptr);
  out.logprobs = at::zeros({n * longest}, lp.options())
                     .index_add(0, at::tensor(slot, at::kLong).to(device), lp)
                     .view({n, longest});
  return out;
}

at::Tensor token_logprobs(CausalLM model, const at::Tensor& input_ids,
                          const at::Tensor& attention_mask, const at::Tensor& target_mask,
                          nn::KVCache* cache) {
  CONCORD_CHECK(input_ids.dim() == 2 && input_ids.size(1) >= 2,
                "token_logprobs: input_ids must be [B, T] with T >= 2, got ", input_ids.sizes());
  if (target_mask.defined()) {
    CONCORD_CHECK(target_mask.sizes() == input_ids.sizes(),
                  "token_logprobs: target_mask must have input_ids' shape ", input_ids.sizes(),
                  ", got ", target_mask.sizes());
  }
  const int64_t batch = input_ids.size(0), steps = input_ids.size(1);
  const at::Tensor hidden = model->hidden_states(input_ids, attention_mask, cache);
  const c10::Device device = hidden.device();
  // Position t predicts token t + 1.
  const at::Tensor states = hidden.narrow(1, 0, steps - 1).reshape({batch * (steps - 1), hidden.size(2)});
  const at::Tensor targets = input_ids.to(device).to(at::kLong).narrow(1, 1, steps - 1).reshape({-1});
  if (!target_mask.defined()) {
    return detail::pick_logprobs(model, states, {}, targets).view({batch, steps - 1});
  }
  const at::Tensor picked =
      target_mask.to(device).narrow(1, 1, steps - 1).reshape({-1}).ne(0).nonzero().squeeze(1);
  const at::Tensor lp = detail::pick_logprobs(model, states.index_select(0, picked), {},
                                              targets.index_select(0, picked));
  return at::zeros({batch * (steps - 1)}, lp.options())
      .index_add(0, picked, lp)
      .view({batch, steps - 1});
}

}  // namespace concord::lm
