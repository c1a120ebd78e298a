// Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290) and its group-robust
// form (Ramesh et al. 2024, "Group Robust Preference Optimization in Reward-free RLHF", arXiv
// 2405.20304): the reward-free side of MaxMin-RLHF, which fits the policy to the preference pairs
// directly instead of through a reward model and PPO.
//
// DPO, Eq. 7. With pi_theta the policy, pi_ref the frozen reference and log pi(y | x) the summed
// log-probability of a response's tokens after its prompt,
//
//   z(x, y_w, y_l) = (log pi_theta(y_w|x) - log pi_ref(y_w|x))
//                  - (log pi_theta(y_l|x) - log pi_ref(y_l|x))
//   l_DPO          = -log sigmoid(beta z)
//
// beta (default 0.1) is the strength of the implicit KL penalty towards pi_ref: Eq. 7 is the
// Bradley-Terry likelihood of the preference under the implicit reward r(x, y) = beta log
// pi_theta(y|x) / pi_ref(y|x), the reward whose KL-regularised optimal policy is pi_theta. With
// label smoothing eps (conservative DPO, labels flipped with probability eps; TRL's formula)
//
//   l_cDPO = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z).
//
// Computed with at::log_sigmoid, never log(sigmoid(.)), which underflows to -inf at large |z|.
// Metrics carry TRL's DPOTrainer names: rewards/chosen = mean beta (log pi_theta(y_w|x) - log
// pi_ref(y_w|x)), rewards/rejected likewise, rewards/accuracies = mean [chosen reward > rejected
// reward], rewards/margins = their mean difference, logps/chosen and logps/rejected = the
// policy's mean response log-probs. The chosen and rejected rows run as one batch per model
// (TRL's concatenated_forward), right-padded to the longer side.
//
// Group-robust DPO (GR-DPO: Ramesh et al.'s robust objective and their Algorithm 1). The pairs
// come from G groups of users (MaxMin-RLHF's EM clusters, or planted groups); instead of the
// average loss the policy minimises the worst group's, as the saddle point
//
//   min_theta max_{alpha in simplex} sum_g alpha_g L_g(theta),   L_g = mean DPO loss of group g,
//
// by alternating a gradient step on theta with an exponentiated-gradient (mirror) ascent step on
// the group weights alpha:
//
//   alpha_g <- alpha_g exp(eta L_g) / sum_h alpha_h exp(eta L_h)    (eta: group_step_size, 0.01)
//
// On a batch of B pairs of which n_g are group g's, the loss sum is sum_b (alpha_{g(b)} B /
// n_{g(b)}) l_b, so that after the Trainer's division by count() = B the step minimises
// sum_g alpha_g mean_{b in g} l_b (a group absent from the batch contributes nothing). With
// gradient accumulation each micro-batch is weighted by its own n_g, and the step's loss is the
// pair-weighted mean of the micro-batches' robust losses.
//
// The alpha step uses the group means L_g of the losses seen by loss() with gradients on since
// the last update (the step's micro-batches; evaluation runs under InferenceMode and is never
// counted), and moves only the groups present in them (before renormalisation). The caller
// runs it after each optimizer step:
//
//   trainer.set_step_hook([&](int64_t) { objective.update_group_weights(); });
//
// Algorithm 1 updates alpha from the losses at theta_{t-1} and then takes the theta step with
// the new alpha; here alpha is updated after the theta step, so a step's theta update uses the
// weights from the previous step's losses (one step of lag). That keeps alpha fixed within a
// step, so accumulated micro-batches see the same weights, and an evaluation never moves them.
// The update is kept in log space (log alpha += eta L, minus its logsumexp), so no weight
// underflows to 0 or overflows however long the run. The authors' code
// (rsshyam/Group-robust-preference-optimization, divide_by_totalcount false) likewise takes the
// per-group means of each batch's losses.
#pragma once
#include <cstdint>
#include <string>

#include <ATen/ATen.h>

#include "concord/core/options.h"
#include "concord/data/preference.h"
#include "concord/lm/causal_lm.h"
#include "concord/train/objective.h"

namespace concord::rlhf {

struct DpoOptions {
  /// beta of Eq. 7: the strength of the implicit KL penalty towards the reference (> 0).
  double beta = 0.1;
  /// cDPO's eps: the probability that a preference label is flipped, in [0, 0.5).
  double label_smoothing = 0.0;
  /// Group-robust DPO: minimise the alpha-weighted group losses, alpha ascending towards the
  /// worst group (needs DpoObjective::set_user_groups).
  bool group_robust = false;
  /// eta of the group weights' exponentiated-gradient step (Ramesh et al.'s step size for the
  /// group weights) (> 0).
  double group_step_size = 0.01;
  /// Run each pair's prompt once for both responses, in the policy's and the reference's
  /// passes, where that saves at least 10% of the token slots (rlhf/shared_prefix.h).
  bool share_prefixes = true;
};

/// The keys of DpoOptions ("dpo"), declared once: beta > 0, label_smoothing in [0, 0.5),
/// group_step_size > 0. DpoObjective holds its options to them.
const OptionsSchema<DpoOptions>& dpo_options_schema();

/// Per-pair DPO losses and implicit rewards.
struct DpoLoss {
  at::Tensor losses;            ///< [B] l_DPO (or l_cDPO), differentiable in the policy log-probs
  at::Tensor chosen_rewards;    ///< [B] beta (log pi_theta(y_w|x) - log pi_ref(y_w|x)), detached
  at::Tensor rejected_rewards;  ///< [B] beta (log pi_theta(y_l|x) - log pi_ref(y_l|x)), detached
};

/// Eq. 7 on summed response log-probs [B] (TRL's DPOTrainer with loss_type "sigmoid"): every
/// input [B], same shape; the results have their dtype and device.
DpoLoss dpo_loss(const at::Tensor& policy_chosen_logps, const at::Tensor& policy_rejected_logps,
                 const at::Tensor& reference_chosen_logps,
                 const at::Tensor& reference_rejected_logps, const DpoOptions& options = {});

/// log pi(y | x) of both responses of each pair [B] each: the sum of log p(token | prefix) over
/// the response tokens (positions >= prompt_length within the row's length).
struct ResponseLogprobs {
  at::Tensor chosen;    ///< [B], on the model's device (fp32; fp64 for a double model)
  at::Tensor rejected;  ///< [B]
};

/// Runs chosen and rejected rows as one right-padded [2B, T] batch (TRL's concatenated_forward),
/// or, with `share_prefixes` where it pays, each pair's common prefix once and the two
/// continuations from it (rlhf/shared_prefix.h; the prefix stops before the prompt's last
/// token, whose state scores the first response token). Only the response positions go through
/// the LM head. Differentiable when grad mode is on; both layouts agree to rounding.
ResponseLogprobs response_logprobs(lm::CausalLM model, const data::PreferenceBatch& batch,
                                   bool share_prefixes = true);

/// The DPO objective for train::Trainer: trains `policy` (the module given to the Trainer)
/// against the frozen `reference`, which runs in eval mode without autograd and is never
/// trained nor checkpointed by the Trainer.
class DpoObjective final : public train::Objective<data::PreferenceBatch> {
 public:
  /// `policy` and `reference` must be two different modules (typically the reference is the SFT
  /// model and the policy starts as its clone); `reference` is put in eval mode.
  DpoObjective(lm::CausalLM policy, lm::CausalLM reference, DpoOptions options = {});

  /// Preference pairs.
  int64_t count(const data::PreferenceBatch& batch) const override;
  /// The sum of the pairs' DPO losses (group-robust: weighted as in the header comment) and
  /// the metrics rewards/*, logps/* (and robust/weight_<g>, robust/loss_<g>) as pair sums.
  train::LossSum loss(const data::PreferenceBatch& batch) override;
  std::string unit() const override { return "pairs"; }

  // ---- group-robust DPO ----------------------------------------------------------------------

  /// The group of each user: user_group[u] in [0, num_groups) for every user index u a batch
  /// may hold ([U] int64). num_groups 0: max + 1. The weights alpha become uniform when the
  /// number of groups changes and are kept otherwise (set_group_weights to restart them); the
  /// losses gathered for the next update are dropped.
  void set_user_groups(const at::Tensor& user_group, int64_t num_groups = 0);
  /// [U] int64 (undefined until set_user_groups).
  const at::Tensor& user_groups() const { return user_group_; }
  int64_t num_groups() const { return log_alpha_.defined() ? log_alpha_.size(0) : 0; }

  /// alpha [G] fp64, on the simplex.
  at::Tensor group_weights() const;
  /// Replaces alpha ([G], positive; normalised here), e.g. when resuming a run.
  void set_group_weights(const at::Tensor& alpha);
  /// alpha_g <- alpha_g exp(eta L_g), renormalised, for the groups seen by loss() with
  /// gradients on since the last update (L_g: the mean of their pairs' DPO losses); a no-op
  /// when none was seen. Wire it into Trainer::set_step_hook.
  void update_group_weights();

  const DpoOptions& options() const { return options_; }
  lm::CausalLM policy() const { return policy_; }
  lm::CausalLM reference() const { return reference_; }

 private:
  ResponseLogprobs reference_logprobs(const data::PreferenceBatch& batch);
  at::Tensor pair_groups(const data::PreferenceBatch& batch) const;
  at::Tensor robust_loss_sum(const at::Tensor& losses, const at::Tensor& groups,
                             train::Metrics& metrics);

  lm::CausalLM policy_;
  lm::CausalLM reference_;
  DpoOptions options_;
  at::Tensor user_group_;     ///< [U] int64, CPU
  at::Tensor log_alpha_;      ///< [G] fp64, CPU: log alpha, logsumexp 0
  at::Tensor pending_sum_;    ///< [G] fp64: loss sums per group since the last update
  at::Tensor pending_count_;  ///< [G] fp64: pairs per group since the last update
};

}  // namespace concord::rlhf
