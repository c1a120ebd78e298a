// Reward models (MaxMin-RLHF's Bradley-Terry rewards, one per user group): a causal-LM backbone and a linear head read at the
// last real token of each sequence, r(x, y) = w_k . h_T(x, y) for head k. With K heads over one
// backbone, the K rewards of a mixture (one per user cluster) cost one forward pass; RewardSet
// below also holds K separate models, each with its own backbone, as the paper trains them.
//
// The checkpoint format is transformers' `...ForSequenceClassification` (GPT-2, Llama, Mistral,
// Qwen2, ...): the backbone's tensors under their usual names, `score.weight` [num_labels, d]
// without a bias, and config.json with `num_labels` (id2label) and `pad_token_id`. A reward
// model trained by TRL's RewardTrainer loads here, and transformers loads what Concord saves
// (tests/rlhf: parity with transformers' own outputs).
//
// Which token is read. transformers pools the logits at the rightmost token that is not the pad
// id; Concord reads the rightmost position whose attention mask is 1, the same token for every
// right-padded batch (and for left-padded ones: the last column), and still right when a real
// token happens to share the pad id (GPT-2 reward models often pad with EOS).
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/rlhf/shared_prefix.h"

namespace concord::rlhf {

class RewardModelImpl : public torch::nn::Cloneable<RewardModelImpl> {
 public:
  /// A fresh model: the backbone per `config` (built without an LM head: config is taken with
  /// tie_word_embeddings) and `num_heads` heads drawn from N(0, initializer_range^2),
  /// transformers' initialisation of `score`.
  RewardModelImpl(lm::ModelConfig config, int64_t num_heads = 1);
  /// Wraps an existing backbone (used as it is, not copied; an LM head it has is never run).
  RewardModelImpl(lm::CausalLM backbone, at::Tensor score_weight);
  void reset() override;

  /// Rewards [B, K] (fp32) of right- or left-padded sequences: every head at the last position
  /// whose attention_mask is 1. attention_mask [B, T] (undefined: no padding).
  /// `shared_columns` > 0: rows that repeat their first shared_columns columns (GRPO's samples
  /// of one prompt) run them once (lm::hidden_states_after_prefix); each row's last real token
  /// must lie after them.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                     int64_t shared_columns = 0);
  /// The final hidden state [B, d] at that position (what the heads read).
  at::Tensor last_hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                         int64_t shared_columns = 0);

  /// Rewards [2B, K] of both rows of B pairs (chosen rows first, as the 2B stacked rows would
  /// give them), each pair's common prefix run once (see concord/rlhf/shared_prefix.h).
  at::Tensor pair_rewards(const SharedPrefixPairs& pairs);
  /// The final hidden states [2B, d] the heads read for those rows.
  at::Tensor pair_last_hidden(const SharedPrefixPairs& pairs);

  int64_t num_heads() const { return score.size(0); }
  int64_t num_parameters() const;

  lm::CausalLM backbone{nullptr};
  at::Tensor score;  ///< [K, d]: "score.weight"

 private:
  lm::ModelConfig config_;
  int64_t initial_heads_ = 1;
};
TORCH_MODULE(RewardModel);

/// The index of the last position with mask 1 in each row, [B] int64 (T - 1 without a mask).
at::Tensor last_token_index(const at::Tensor& attention_mask, int64_t length);

/// Reads a `...ForSequenceClassification` folder (config.json with num_labels, model.safetensors
/// with score.weight). A causal-LM folder (no score.weight) becomes the backbone of a new model
/// with `new_heads` fresh heads: the usual start of reward modelling, from the SFT model.
RewardModel load_reward_model(const std::filesystem::path& folder,
                              const lm::LoadOptions& options = {}, int64_t new_heads = 1);

/// Writes `model` as transformers' `<Family>ForSequenceClassification` with num_labels = heads.
void save_reward_model(RewardModel model, const std::filesystem::path& folder);

/// K reward functions r_1..r_K: one model with K heads (shared backbone) or K models with one
/// head each (separate backbones). Everything that uses a mixture of rewards (EM, PPO's
/// aggregators) goes through this, so both layouts run the same algorithms.
class RewardSet {
 public:
  RewardSet() = default;
  /// One model; its heads are the K rewards.
  static RewardSet shared(RewardModel model);
  /// K models of one head each.
  static RewardSet separate(std::vector<RewardModel> models);

  int64_t size() const { return heads_; }
  bool is_shared() const { return models_.size() == 1 && heads_ > 1; }
  const std::vector<RewardModel>& models() const { return models_; }
  std::vector<RewardModel>& models() { return models_; }

  /// r_k(x_b) for every head: [B, K]. `shared_columns` as in RewardModelImpl::forward.
  at::Tensor all(const at::Tensor& input_ids, const at::Tensor& attention_mask = {},
                 int64_t shared_columns = 0);
  /// r_{head[b]}(x_b): [B]. Separate models run only on the rows that use them.
  at::Tensor selected(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                      const at::Tensor& head);
  /// The same for both rows of B pairs, each pair's common prefix run once: all() [2B, K];
  /// selected() with one head per pair, pair_head [B], gives [2B].
  at::Tensor all(const SharedPrefixPairs& pairs);
  at::Tensor selected(const SharedPrefixPairs& pairs, const at::Tensor& pair_head);

  /// The trainable modules, named for checkpoints: "reward" (shared) or "reward_0", ...
  std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>> named_modules() const;
  void train(bool on = true);
  /// A deep copy (EM's restarts start each from the same weights; a frozen copy for scoring).
  RewardSet clone() const;
  /// Copies `other`'s weights into this set's (same layout and shapes).
  void copy_weights_from(const RewardSet& other);
  void to(c10::Device device);

  /// Saves as transformers folders: dir/reward (shared) or dir/reward_0, dir/reward_1, ...
  void save(const std::filesystem::path& dir) const;
  /// Reads what save() wrote.
  static RewardSet load(const std::filesystem::path& dir, const lm::LoadOptions& options = {});

 private:
  std::vector<RewardModel> models_;
  int64_t heads_ = 0;
};

}  // namespace concord::rlhf
