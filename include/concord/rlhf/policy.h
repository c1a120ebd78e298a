// The policy PPO trains: a causal LM and a value head on its final hidden states (TRL's
// AutoModelForCausalLMWithValueHead layout: one backbone, V(s_t) = w . h_t + b), and the
// per-token quantities of a rollout that PPO, GRPO and the KL penalty need. Responses follow
// left-padded prompts of P columns: response token t sits at column P + t and is predicted from
// column P + t - 1, whose hidden state also gives the value of the state before it.
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>

#include <ATen/ATen.h>

#include "concord/lm/causal_lm.h"

namespace concord::rlhf {

class PolicyWithValueImpl : public torch::nn::Cloneable<PolicyWithValueImpl> {
 public:
  /// Wraps `policy` (used as it is, not copied) and adds a value head, weights N(0, 0.02^2)
  /// ... as TRL's ValueHead (a Linear with bias), bias 0.
  explicit PolicyWithValueImpl(lm::CausalLM policy);
  void reset() override;

  lm::CausalLM policy{nullptr};
  torch::nn::Linear value_head{nullptr};

 private:
  int64_t hidden_ = 0;
};
TORCH_MODULE(PolicyWithValue);

/// Per-token outputs of a model over `sequences` [B, P + R] (mask [B, P + R]) at the R
/// response positions.
struct ResponseOutputs {
  at::Tensor logprobs;  ///< [B, R] fp32: log softmax(logits / temperature)[token]
  at::Tensor entropy;   ///< [B, R] fp32 entropy of that distribution (only if asked)
  at::Tensor values;    ///< [B, R] fp32 (only with a value head)
};

/// Runs `model` over the sequences and reads the response positions. Differentiable when
/// called with gradients on. With `share_prompts`, rows that repeat a prompt (GRPO's groups)
/// run its first P - 1 columns once (lm::hidden_states_after_prefix), where that saves
/// lm::kMinSharedFraction of the token slots; the outputs are the same up to summation order.
ResponseOutputs response_outputs(lm::CausalLM model, const at::Tensor& sequences,
                                 const at::Tensor& attention_mask, int64_t prompt_length,
                                 double temperature = 1.0, bool entropy = false,
                                 torch::nn::Linear value_head = nullptr, bool share_prompts = true);

}  // namespace concord::rlhf
