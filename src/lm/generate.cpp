#include "concord/lm/generate.h"

#include <algorithm>
#include <limits>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/lm/repeated_prefix.h"

namespace concord::lm {

at::Tensor warp_logits(const at::Tensor& logits, const GenerationOptions& options) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  at::Tensor x = logits.to(at::kFloat) / options.temperature;
  const int64_t vocab = x.size(1);
  if (options.top_k > 0 && options.top_k < vocab) {
    const at::Tensor kth = std::get<0>(x.topk(options.top_k, -1)).narrow(-1, options.top_k - 1, 1);
    x = x.masked_fill(x < kth, neg_inf);
  }
  if (options.top_p < 1.0) {
    // transformers' TopPLogitsWarper: sort ascending, drop the tokens whose cumulative
    // probability stays <= 1 - top_p, always keep the most likely one.
    auto sorted = x.sort(-1, /*descending=*/false);
    const at::Tensor& values = std::get<0>(sorted);
    const at::Tensor& order = std::get<1>(sorted);
    const at::Tensor cum = at::softmax(values, -1).cumsum(-1);
    at::Tensor remove_sorted = cum <= (1.0 - options.top_p);
    remove_sorted.narrow(-1, vocab - 1, 1).fill_(false);
    const at::Tensor remove = at::zeros_like(remove_sorted).scatter(-1, order, remove_sorted);
    x = x.masked_fill(remove, neg_inf);
  }
  return x;
}

at::Tensor select_next_tokens(const at::Tensor& logits_in, const GenerationOptions& options,
                              at::Generator& generator) {
  TORCH_CHECK(logits_in.dim() == 2, "select_next_tokens: logits must be [B, V], got ",
              logits_in.sizes());
  const at::Tensor logits = logits_in.to(at::kCPU).to(at::kFloat);
  if (!options.do_sample) return logits.argmax(-1);
  const at::Tensor probs = at::softmax(warp_logits(logits, options), -1);
  return at::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(-1);
}

namespace {

void check_options(const GenerationOptions& o, const text::Tokenizer* tokenizer) {
  generation_options_schema().validate(o, "generate options");
  CONCORD_CHECK(o.stop_strings.empty() || tokenizer != nullptr,
                "generate: stop strings need a tokenizer");
  for (const auto& s : o.stop_strings) CONCORD_CHECK(!s.empty(), "generate: empty stop string");
}

void run_batch(CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
               const std::vector<size_t>& rows, const GenerationOptions& options,
               const std::vector<int64_t>& stop_ids, int64_t pad, const text::Tokenizer* tokenizer,
               at::Generator& generator, std::vector<Generation>& results) {
  const int64_t batch = static_cast<int64_t>(rows.size());
  int64_t longest = 0;
  for (size_t r : rows) longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[r].size()));
  at::Tensor ids = at::full({batch, longest}, pad, at::kLong);
  at::Tensor mask = at::zeros({batch, longest}, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < batch; ++b) {
    const auto& p = prompts[rows[static_cast<size_t>(b)]];
    const int64_t offset = longest - static_cast<int64_t>(p.size());  // left padding
    for (size_t t = 0; t < p.size(); ++t) {
      ids_a[b][offset + static_cast<int64_t>(t)] = p[t];
      mask_a[b][offset + static_cast<int64_t>(t)] = 1;
    }
  }
  const c10::Device device = model->embed->weight.device();
  nn::KVCache cache = model->make_cache();
  cache.reserve(longest + options.max_new_tokens);
  mask = mask.to(device);
  at::Tensor last = model->hidden_states(ids.to(device), mask, &cache).select(1, longest - 1);
  std::vector<bool> finished(static_cast<size_t>(batch), false);
  std::vector<std::string> cut_text(static_cast<size_t>(batch));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor next = select_next_tokens(model->logits(last), options, generator).contiguous();
    auto next_a = next.accessor<int64_t, 1>();
    bool all_done = true;
    for (int64_t b = 0; b < batch; ++b) {
      const size_t bi = static_cast<size_t>(b);
      if (finished[bi]) {
        next_a[b] = pad;
        continue;
      }
      Generation& g = results[rows[bi]];
      const int64_t token = next_a[b];
      g.tokens.push_back(token);
      if (std::find(stop_ids.begin(), stop_ids.end(), token) != stop_ids.end()) {
        finished[bi] = true;
        g.finish_reason = "stop_token";
      } else if (!options.stop_strings.empty()) {
        const std::vector<text::TokenId> out(g.tokens.begin(), g.tokens.end());
        const std::string decoded = tokenizer->decode(out);
        size_t cut = std::string::npos;
        for (const auto& s : options.stop_strings) cut = std::min(cut, decoded.find(s));
        if (cut != std::string::npos) {
          finished[bi] = true;
          g.finish_reason = "stop_string";
          cut_text[bi] = decoded.substr(0, cut);
        }
      }
      all_done = all_done && finished[bi];
    }
    if (all_done || step + 1 == options.max_new_tokens) break;
    mask = at::cat({mask, at::ones({batch, 1}, mask.options())}, 1);
    last = model->hidden_states(next.view({batch, 1}).to(device), mask, &cache).select(1, 0);
  }
  for (int64_t b = 0; b < batch; ++b) {
    const size_t bi = static_cast<size_t>(b);
    Generation& g = results[rows[bi]];
    if (g.finish_reason.empty()) g.finish_reason = "length";
    if (tokenizer == nullptr) continue;
    if (g.finish_reason == "stop_string") {
      g.text = cut_text[bi];
    } else {
      std::vector<text::TokenId> out(g.tokens.begin(), g.tokens.end());
      if (g.finish_reason == "stop_token") out.pop_back();
      g.text = tokenizer->decode(out);
    }
  }
}

std::vector<Generation> generate_impl(CausalLM model,
                                      const std::vector<std::vector<int64_t>>& prompts,
                                      const GenerationOptions& options,
                                      const text::Tokenizer* tokenizer) {
  check_options(options, tokenizer);
  for (size_t i = 0; i < prompts.size(); ++i) {
    CONCORD_CHECK(!prompts[i].empty(), "generate: prompt ", i, " is empty");
  }
  const ModelConfig& c = model->config;
  std::vector<int64_t> stop_ids = options.stop_token_ids;
  if (stop_ids.empty() && c.eos_token_id) stop_ids.push_back(*c.eos_token_id);
  const int64_t pad = options.pad_token_id ? *options.pad_token_id
                      : c.pad_token_id     ? *c.pad_token_id
                      : c.eos_token_id     ? *c.eos_token_id
                                           : 0;
  CONCORD_CHECK(pad >= 0 && pad < c.vocab_size, "generate: pad token id ", pad,
                " outside the vocabulary [0, ", c.vocab_size, ")");
  c10::InferenceMode inference;
  at::Generator generator = at::detail::createCPUGenerator(options.seed);
  std::vector<Generation> results(prompts.size());
  if (options.max_new_tokens == 0) {
    for (auto& g : results) g.finish_reason = "length";
    return results;
  }
  const size_t chunk = options.batch_size > 0 ? static_cast<size_t>(options.batch_size)
                                              : std::max<size_t>(1, prompts.size());
  for (size_t start = 0; start < prompts.size(); start += chunk) {
    std::vector<size_t> rows;
    for (size_t i = start; i < std::min(prompts.size(), start + chunk); ++i) rows.push_back(i);
    run_batch(model, prompts, rows, options, stop_ids, pad, tokenizer, generator, results);
  }
  return results;
}

}  // namespace

const OptionsSchema<GenerationOptions>& generation_options_schema() {
  static const OptionsSchema<GenerationOptions> schema = [] {
    OptionsSchema<GenerationOptions> s("generation");
    s.field("max_new_tokens", &GenerationOptions::max_new_tokens,
            "most tokens added to each prompt", opt::at_least(0))
        .field("do_sample", &GenerationOptions::do_sample,
               "false: greedy (argmax); true: sample from the processed distribution")
        .field("temperature", &GenerationOptions::temperature, "divides the logits before sampling",
               opt::greater_than(0))
        .field("top_k", &GenerationOptions::top_k, "keep the k most likely tokens (0: all)",
               opt::at_least(0))
        .field("top_p", &GenerationOptions::top_p,
               "keep the smallest set of most likely tokens whose probability reaches top_p (1: all)",
               opt::greater_than(0), opt::at_most(1))
        .field("stop_token_ids", &GenerationOptions::stop_token_ids,
               "a row finishes when it emits one of these (empty: the model's eos_token_id)")
        .field("stop_strings", &GenerationOptions::stop_strings,
               "a row finishes once its text contains one of these (needs a tokenizer)")
        .field("pad_token_id", &GenerationOptions::pad_token_id,
               "id for left padding (null: the model's pad_token_id, else eos_token_id, else 0)")
        .field("seed", &GenerationOptions::seed, "seed of the sampling generator")
        .field("batch_size", &GenerationOptions::batch_size,
               "prompts per forward pass (0: all at once)", opt::at_least(0))
        .field("share_prompts", &GenerationOptions::share_prompts,
               "rows that repeat a prompt run its tokens once (GRPO's samples of a prompt)");
    return s;
  }();
  return schema;
}

nlohmann::json GenerationOptions::to_json() const { return generation_options_schema().to_json(*this); }

GenerationOptions GenerationOptions::from_json(const nlohmann::json& json, const std::string& source) {
  return generation_options_schema().from_json(json, source);
}

std::vector<Generation> generate(CausalLM model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerationOptions& options,
                                 const text::Tokenizer* tokenizer) {
  return translate_torch_errors("lm::generate", [&] {
    return generate_impl(std::move(model), prompts, options, tokenizer);
  });
}

namespace {

SampledBatch generate_tensors_impl(CausalLM model, const at::Tensor& prompt_ids,
                                   const at::Tensor& prompt_mask, const GenerationOptions& options,
                                   at::Generator generator, int64_t sync_every) {
  generation_options_schema().validate(options, "generate_tensors options");
  CONCORD_CHECK(options.stop_strings.empty(), "generate_tensors: stop strings are not supported");
  CONCORD_CHECK(prompt_ids.dim() == 2 && prompt_ids.size(1) > 0,
                "generate_tensors: prompt_ids must be [B, P] with P > 0, got ", prompt_ids.sizes());
  CONCORD_CHECK(sync_every >= 1, "generate_tensors: sync_every must be >= 1");
  const ModelConfig& c = model->config;
  std::vector<int64_t> stop_ids = options.stop_token_ids;
  if (stop_ids.empty() && c.eos_token_id) stop_ids.push_back(*c.eos_token_id);
  const int64_t pad = options.pad_token_id ? *options.pad_token_id
                      : c.pad_token_id     ? *c.pad_token_id
                      : c.eos_token_id     ? *c.eos_token_id
                                           : 0;
  c10::InferenceMode inference;
  const c10::Device device = model->embed->weight.device();
  if (!generator.defined()) {
    if (device.is_cpu()) {
      generator = at::detail::createCPUGenerator(options.seed);
    } else {
      generator = at::globalContext().defaultGenerator(device);
    }
  }
  const int64_t B = prompt_ids.size(0), P = prompt_ids.size(1);
  const int64_t R = options.max_new_tokens;
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(device);
  const at::Tensor ids = prompt_ids.to(long_opts);
  at::Tensor mask = prompt_mask.defined() ? prompt_mask.to(long_opts) : at::ones({B, P}, long_opts);
  at::Tensor response = at::full({B, R}, pad, long_opts);
  at::Tensor response_mask = at::zeros({B, R}, long_opts);
  at::Tensor logprobs = at::zeros({B, R}, at::TensorOptions().dtype(at::kFloat).device(device));
  const at::Tensor stops = at::tensor(stop_ids, at::kLong).to(device);
  at::Tensor done = at::zeros({B}, at::TensorOptions().dtype(at::kBool).device(device));
  int64_t steps = 0;
  if (R > 0) {
    nn::KVCache cache = model->make_cache();
    cache.reserve(P + R);
    // Left padding precedes real tokens, so the prompt pass needs the mask. A prompt that
    // several rows repeat runs once.
    const RepeatedPrefixes repeated =
        options.share_prompts ? find_repeated_prefixes(ids, mask, P) : RepeatedPrefixes{};
    at::Tensor last = repeated.pays(P) ? encode_repeated_prefixes(model, ids, mask, repeated, cache)
                                       : model->hidden_states(ids, mask, &cache).select(1, P - 1);
    for (int64_t step = 0; step < R; ++step) {
      const at::Tensor logits = model->logits(last).to(at::kFloat);
      at::Tensor next;
      if (options.do_sample) {
        const at::Tensor probs = at::softmax(warp_logits(logits, options), -1);
        next = at::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(-1);
      } else {
        next = logits.argmax(-1);
      }
      const double temperature = options.do_sample ? options.temperature : 1.0;
      at::Tensor lp = at::log_softmax(logits / temperature, -1).gather(1, next.unsqueeze(1)).squeeze(1);
      const at::Tensor live = done.logical_not();
      next = at::where(live, next, at::full_like(next, pad));
      lp = at::where(live, lp, at::zeros_like(lp));
      response.select(1, step).copy_(next);
      logprobs.select(1, step).copy_(lp);
      response_mask.select(1, step).copy_(live.to(at::kLong));
      if (stops.numel() > 0) done = done.logical_or(at::isin(next, stops));
      steps = step + 1;
      if (step + 1 == R) break;
      if ((device.is_cpu() || steps % sync_every == 0) && done.all().item<bool>()) break;
      mask = at::cat({mask, live.to(at::kLong).unsqueeze(1)}, 1);
      last = model->hidden_states(next.view({B, 1}), mask, &cache).select(1, 0);
    }
  }
  SampledBatch out;
  out.response = response.narrow(1, 0, steps).contiguous();
  out.response_mask = response_mask.narrow(1, 0, steps).contiguous();
  out.logprobs = logprobs.narrow(1, 0, steps).contiguous();
  out.sequences = at::cat({ids, out.response}, 1);
  const at::Tensor prompt_part = prompt_mask.defined() ? prompt_mask.to(long_opts) : at::ones({B, P}, long_opts);
  out.attention_mask = at::cat({prompt_part, out.response_mask}, 1);
  return out;
}

}  // namespace

SampledBatch generate_tensors(CausalLM model, const at::Tensor& prompt_ids,
                              const at::Tensor& prompt_mask, const GenerationOptions& options,
                              at::Generator generator, int64_t sync_every) {
  return translate_torch_errors("lm::generate_tensors", [&] {
    return generate_tensors_impl(std::move(model), prompt_ids, prompt_mask, options,
                                 std::move(generator), sync_every);
  });
}

std::vector<Generation> generate_text(CausalLM model, const text::Tokenizer& tokenizer,
                                      const std::vector<std::string>& prompts,
                                      const GenerationOptions& options) {
  std::vector<std::vector<int64_t>> ids;
  ids.reserve(prompts.size());
  for (const auto& p : prompts) {
    const auto enc = tokenizer.encode(p, /*add_special_tokens=*/true);
    ids.emplace_back(enc.begin(), enc.end());
  }
  return generate(std::move(model), ids, options, &tokenizer);
}

}  // namespace concord::lm
