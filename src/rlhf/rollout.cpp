#include "concord/rlhf/rollout.h"

#include <algorithm>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/rlhf/policy.h"

namespace concord::rlhf {

std::pair<at::Tensor, at::Tensor> pad_prompts_left(const std::vector<std::vector<int64_t>>& prompts,
                                                   int64_t pad_id) {
  CONCORD_CHECK(!prompts.empty(), "rollout: no prompts");
  size_t longest = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    CONCORD_CHECK(!prompts[i].empty(), "rollout: prompt ", i, " is empty");
    longest = std::max(longest, prompts[i].size());
  }
  const auto B = static_cast<int64_t>(prompts.size()), P = static_cast<int64_t>(longest);
  at::Tensor ids = at::full({B, P}, pad_id, at::kLong);
  at::Tensor mask = at::zeros({B, P}, at::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<size_t>(b)];
    const int64_t offset = P - static_cast<int64_t>(p.size());
    for (size_t t = 0; t < p.size(); ++t) {
      ia[b][offset + static_cast<int64_t>(t)] = p[t];
      ma[b][offset + static_cast<int64_t>(t)] = 1;
    }
  }
  return {ids, mask};
}

Rollout collect_rollout(lm::CausalLM policy, lm::CausalLM reference, RewardSet& rewards,
                        RewardAggregator& aggregator,
                        const std::vector<std::vector<int64_t>>& prompts,
                        const RolloutOptions& options, at::Generator generator, int64_t repeats) {
  CONCORD_CHECK(repeats >= 1, "rollout: repeats must be >= 1");
  std::vector<std::vector<int64_t>> rows;
  for (const auto& p : prompts) {
    for (int64_t r = 0; r < repeats; ++r) rows.push_back(p);
  }
  const lm::ModelConfig& c = policy->config;
  const int64_t pad = options.generation.pad_token_id ? *options.generation.pad_token_id
                      : c.pad_token_id                 ? *c.pad_token_id
                      : c.eos_token_id                 ? *c.eos_token_id
                                                       : 0;
  auto [ids, mask] = pad_prompts_left(rows, pad);
  const bool was_training = policy->is_training();
  policy->eval();
  lm::SampledBatch sampled = lm::generate_tensors(policy, ids, mask, options.generation, generator);
  policy->train(was_training);
  CONCORD_CHECK(sampled.response.size(1) > 0, "rollout: max_new_tokens must be > 0");
  Rollout out;
  out.prompt_length = ids.size(1);
  out.sequences = sampled.sequences;
  out.attention_mask = sampled.attention_mask;
  out.response_mask = sampled.response_mask.to(at::kFloat);
  out.logprobs = sampled.logprobs;
  c10::InferenceMode guard;
  const double temperature = options.generation.do_sample ? options.generation.temperature : 1.0;
  // Repeated prompts (GRPO's groups) run once in these passes too, as in sampling.
  const bool share = options.generation.share_prompts;
  const ResponseOutputs ref = response_outputs(reference, out.sequences, out.attention_mask,
                                                out.prompt_length, temperature, false, nullptr, share);
  out.ref_logprobs = ref.logprobs * out.response_mask;
  // Every response holds at least one token, so the reward is read after the prompt's columns.
  const c10::Device reward_device = rewards.models()[0]->score.device();
  const at::Tensor scored = out.sequences.to(reward_device);
  const at::Tensor scored_mask = out.attention_mask.to(reward_device);
  out.group_rewards =
      rewards.all(scored, scored_mask, share ? out.prompt_length : 0).to(out.logprobs.device());
  CONCORD_CHECK(at::isfinite(out.group_rewards).all().item<bool>(),
                "rollout: a reward model produced a non-finite reward (NaN or inf)");
  // A response ended when its last real token is a stop token.
  std::vector<int64_t> stop_ids = options.generation.stop_token_ids;
  if (stop_ids.empty() && c.eos_token_id) stop_ids.push_back(*c.eos_token_id);
  const at::Tensor lengths = sampled.response_mask.sum(1);  // >= 1
  const at::Tensor last = sampled.response.gather(1, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1);
  out.ended = stop_ids.empty() ? at::zeros_like(last, at::kBool)
                               : at::isin(last, at::tensor(stop_ids, at::kLong).to(last.device()));
  out.scores = aggregate_scores(out.group_rewards, out.ended, aggregator, options);
  return out;
}

at::Tensor aggregate_scores(const at::Tensor& group_rewards, const at::Tensor& ended,
                            RewardAggregator& aggregator, const RolloutOptions& options) {
  at::Tensor r = group_rewards;
  if (options.reward_mean.defined()) {
    r = (r - options.reward_mean.to(r.device())) / options.reward_std.to(r.device());
  }
  at::Tensor scores = aggregator.combine(r);
  if (options.missing_eos_penalty != 0) {
    scores = scores - options.missing_eos_penalty * ended.logical_not().to(scores.scalar_type());
  }
  return scores;
}

std::pair<at::Tensor, at::Tensor> reward_statistics(const at::Tensor& group_rewards) {
  CONCORD_CHECK(group_rewards.dim() == 2 && group_rewards.size(0) >= 2,
                "reward_statistics: need [B >= 2, K] rewards, got ", group_rewards.sizes());
  const at::Tensor r = group_rewards.to(at::kFloat);
  return {r.mean(0), r.std(0).clamp_min(1e-6)};
}

}  // namespace concord::rlhf
