#include "concord/rlhf/policy.h"

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/lm/repeated_prefix.h"

namespace concord::rlhf {

PolicyWithValueImpl::PolicyWithValueImpl(lm::CausalLM policy_in)
    : hidden_(policy_in->config.hidden_size) {
  policy = register_module("policy", std::move(policy_in));
  value_head = register_module("value_head", torch::nn::Linear(hidden_, 1));
  torch::NoGradGuard no_grad;
  value_head->weight.normal_(0.0, 0.02);
  value_head->bias.zero_();
  value_head->to(policy->embed->weight.device());
}

void PolicyWithValueImpl::reset() {
  // Cloning: the children are rebuilt here and their weights copied by Cloneable.
  policy = register_module("policy", lm::CausalLM(policy ? policy->config : lm::ModelConfig{}));
  value_head = register_module("value_head", torch::nn::Linear(hidden_, 1));
}

ResponseOutputs response_outputs(lm::CausalLM model, const at::Tensor& sequences,
                                 const at::Tensor& attention_mask, int64_t prompt_length,
                                 double temperature, bool entropy, torch::nn::Linear value_head,
                                 bool share_prompts) {
  CONCORD_CHECK(sequences.dim() == 2 && sequences.size(1) > prompt_length && prompt_length > 0,
                "response_outputs: sequences [B, P + R] with P = ", prompt_length,
                " and R > 0 expected, got ", sequences.sizes());
  CONCORD_CHECK(temperature > 0, "response_outputs: temperature must be > 0");
  const int64_t R = sequences.size(1) - prompt_length;
  // Column P + t - 1 predicts response token t (and its hidden state is the state before it):
  // the hidden states from column P - 1 on, [B, R + 1, d], of which the first R are read.
  const at::Tensor after =
      share_prompts
          ? lm::hidden_states_after_prefix(model, sequences, attention_mask, prompt_length - 1)
          : model->hidden_states(sequences, attention_mask).narrow(1, prompt_length - 1, R + 1);
  const at::Tensor h = after.narrow(1, 0, R);
  const at::ScalarType type = at::promote_types(h.scalar_type(), at::kFloat);
  const at::Tensor logits = model->logits(h).to(type) / temperature;  // [B, R, V]
  const at::Tensor logp = at::log_softmax(logits, -1);
  const at::Tensor targets = sequences.narrow(1, prompt_length, R).unsqueeze(-1);
  ResponseOutputs out;
  out.logprobs = logp.gather(-1, targets).squeeze(-1);
  if (entropy) out.entropy = -(logp.exp() * logp).sum(-1);
  if (value_head) out.values = value_head->forward(h).squeeze(-1).to(type);
  return out;
}

}  // namespace concord::rlhf
