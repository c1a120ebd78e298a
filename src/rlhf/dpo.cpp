#include "concord/rlhf/dpo.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>

#include <ATen/core/grad_mode.h>

#include "concord/core/error.h"
#include "concord/lm/score.h"
#include "concord/rlhf/shared_prefix.h"

namespace concord::rlhf {

namespace {

void check_logps(const at::Tensor& t, const at::Tensor& like, const char* name) {
  CONCORD_CHECK(t.defined() && t.dim() == 1, "dpo_loss: ", name, " must be [B] log-probs, got ",
                t.defined() ? t.sizes() : at::IntArrayRef{});
  CONCORD_CHECK(t.sizes() == like.sizes(), "dpo_loss: ", name, " has shape ", t.sizes(),
                ", policy_chosen_logps ", like.sizes());
}

void check_side(const at::Tensor& ids, const at::Tensor& mask, int64_t pairs, const char* side) {
  CONCORD_CHECK(ids.defined() && ids.dim() == 2 && ids.size(0) == pairs, "DPO: ", side,
                "_ids must be [B, T] with B = ", pairs, ", got ",
                ids.defined() ? ids.sizes() : at::IntArrayRef{});
  CONCORD_CHECK(mask.defined() && mask.sizes() == ids.sizes(), "DPO: ", side,
                "_mask must have ", side, "_ids' shape ", ids.sizes());
}

void check_batch(const data::PreferenceBatch& batch) {
  CONCORD_CHECK(batch.prompt_lengths.defined() && batch.prompt_lengths.dim() == 1,
                "DPO: the batch needs prompt_lengths [B]");
  const int64_t pairs = batch.prompt_lengths.size(0);
  CONCORD_CHECK(pairs > 0, "DPO: the batch has no preference pairs");
  check_side(batch.chosen_ids, batch.chosen_mask, pairs, "chosen");
  check_side(batch.rejected_ids, batch.rejected_mask, pairs, "rejected");
}

// Right-pads a [B, T] tensor with zeros to `length` columns. Zero is a valid id for every
// vocabulary; padding is neither attended by real tokens (causal, after them) nor scored.
at::Tensor pad_columns(const at::Tensor& x, int64_t length) {
  return at::constant_pad_nd(x, {0, length - x.size(1)}, 0);
}

train::Metrics dpo_metrics(const DpoLoss& l, const ResponseLogprobs& policy) {
  const at::Tensor chosen = l.chosen_rewards;
  const at::Tensor rejected = l.rejected_rewards;
  // One transfer for every sum.
  const at::Tensor sums =
      at::stack({chosen.sum(), rejected.sum(), chosen.gt(rejected).sum().to(chosen.scalar_type()),
                 (chosen - rejected).sum(), policy.chosen.detach().sum(),
                 policy.rejected.detach().sum()})
          .to(at::kCPU, at::kDouble);
  const double* s = sums.data_ptr<double>();
  const double pairs = static_cast<double>(chosen.size(0));
  return {{"rewards/chosen", {s[0], pairs}},   {"rewards/rejected", {s[1], pairs}},
          {"rewards/accuracies", {s[2], pairs}}, {"rewards/margins", {s[3], pairs}},
          {"logps/chosen", {s[4], pairs}},     {"logps/rejected", {s[5], pairs}}};
}

}  // namespace

const OptionsSchema<DpoOptions>& dpo_options_schema() {
  static const OptionsSchema<DpoOptions> schema = [] {
    OptionsSchema<DpoOptions> s("dpo");
    s.field("beta", &DpoOptions::beta,
            "strength of the implicit KL penalty towards the reference (DPO Eq. 7)",
            opt::greater_than(0))
        .field("label_smoothing", &DpoOptions::label_smoothing,
               "cDPO: probability that a preference label is flipped (0: plain DPO)",
               opt::at_least(0), opt::less_than(0.5))
        .field("group_robust", &DpoOptions::group_robust,
               "group-robust DPO: minimise the worst user group's loss (Ramesh et al. 2024)")
        .field("group_step_size", &DpoOptions::group_step_size,
               "step size of the group weights' exponentiated-gradient update",
               opt::greater_than(0))
        .field("share_prefixes", &DpoOptions::share_prefixes,
               "run each pair's prompt once for both responses when that saves at least " +
                   min_shared_fraction_text() +
                   " of the token slots (the log-probs are the full rows', to rounding)");
    return s;
  }();
  return schema;
}

DpoLoss dpo_loss(const at::Tensor& policy_chosen_logps, const at::Tensor& policy_rejected_logps,
                 const at::Tensor& reference_chosen_logps,
                 const at::Tensor& reference_rejected_logps, const DpoOptions& options) {
  check_logps(policy_chosen_logps, policy_chosen_logps, "policy_chosen_logps");
  check_logps(policy_rejected_logps, policy_chosen_logps, "policy_rejected_logps");
  check_logps(reference_chosen_logps, policy_chosen_logps, "reference_chosen_logps");
  check_logps(reference_rejected_logps, policy_chosen_logps, "reference_rejected_logps");
  dpo_options_schema().validate(options, "dpo_loss options");
  const double beta = options.beta;
  const double eps = options.label_smoothing;
  // In TRL's order of operations, so the fixture's float32 values match to rounding.
  const at::Tensor chosen_logratios = policy_chosen_logps - reference_chosen_logps;
  const at::Tensor rejected_logratios = policy_rejected_logps - reference_rejected_logps;
  const at::Tensor logits = chosen_logratios - rejected_logratios;  // z of Eq. 7
  at::Tensor losses = -at::log_sigmoid(beta * logits);
  if (eps > 0) losses = losses * (1 - eps) - at::log_sigmoid(-beta * logits) * eps;
  return {losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()};
}

namespace {

// The response log-probs from the shared-prefix layout: continuation column c (c >= 1) of pair
// b's rows is the token at position s_b + c, scored from column c - 1 when it is a response
// token (s_b + c >= prompt length); s_b < prompt length, so column 0 is never one.
std::optional<ResponseLogprobs> shared_response_logprobs(lm::CausalLM model,
                                                         const data::PreferenceBatch& batch) {
  const at::Tensor prompt = batch.prompt_lengths.to(at::kCPU, at::kLong);
  auto layout = shared_prefix_layout(batch, 0, true, (prompt - 1).clamp_min(0));
  if (!layout || layout->continuation_ids.size(1) < 2) return std::nullopt;
  const int64_t pairs = layout->pairs(), width = layout->continuation_ids.size(1);
  const at::Tensor column = at::arange(width, at::kLong).unsqueeze(0);
  const at::Tensor start = layout->shared.repeat({2}).unsqueeze(1);
  const at::Tensor target = column.ge(1)
                                .logical_and(column.le(layout->last_index.unsqueeze(1)))
                                .logical_and((column + start).ge(prompt.repeat({2}).unsqueeze(1)));
  const c10::Device device = model->embed->weight.device();
  nn::KVCache cache = encode_prefixes(model, *layout);  // a layout that pays shares a prefix
  const at::Tensor sums = lm::token_logprobs(model, layout->continuation_ids.to(device),
                                             layout->attention_mask.to(device), target, &cache)
                              .sum(1);
  return ResponseLogprobs{sums.narrow(0, 0, pairs), sums.narrow(0, pairs, pairs)};
}

}  // namespace

ResponseLogprobs response_logprobs(lm::CausalLM model, const data::PreferenceBatch& batch,
                                   bool share_prefixes) {
  check_batch(batch);
  if (share_prefixes) {
    if (auto shared = shared_response_logprobs(model, batch)) return *shared;
  }
  const int64_t pairs = batch.prompt_lengths.size(0);
  const int64_t length = std::max(batch.chosen_ids.size(1), batch.rejected_ids.size(1));
  CONCORD_CHECK(length >= 2, "DPO: sequences of one token have no response to score");
  const at::Tensor ids = at::cat({pad_columns(batch.chosen_ids, length),
                                  pad_columns(batch.rejected_ids, length)})
                             .to(at::kLong);
  const at::Tensor mask = at::cat({pad_columns(batch.chosen_mask, length),
                                   pad_columns(batch.rejected_mask, length)});
  const at::Tensor prompt =
      at::cat({batch.prompt_lengths, batch.prompt_lengths}).to(at::kCPU, at::kLong).unsqueeze(1);
  // The response: real tokens at or after the prompt's end.
  const at::Tensor response =
      mask.to(at::kCPU).ne(0).logical_and(at::arange(length, at::kLong).unsqueeze(0).ge(prompt));
  // Right padding needs no attention mask: a causal model never looks ahead, so real tokens
  // never see it (lm/score.h passes a mask only when padding precedes a real token).
  const at::Tensor sums = lm::token_logprobs(model, ids, {}, response).sum(1);
  return {sums.narrow(0, 0, pairs), sums.narrow(0, pairs, pairs)};
}

DpoObjective::DpoObjective(lm::CausalLM policy, lm::CausalLM reference, DpoOptions options)
    : policy_(std::move(policy)), reference_(std::move(reference)), options_(options) {
  CONCORD_CHECK(!policy_.is_empty() && !reference_.is_empty(),
                "DpoObjective: the policy and the reference must be built models");
  CONCORD_CHECK(policy_.get() != reference_.get(),
                "DpoObjective: the policy and the reference are the same module; pass a frozen "
                "copy as the reference (policy->clone())");
  dpo_options_schema().validate(options_, "DpoObjective options");
  reference_->eval();
}

int64_t DpoObjective::count(const data::PreferenceBatch& batch) const {
  CONCORD_CHECK(batch.prompt_lengths.defined(), "DPO: the batch needs prompt_lengths [B]");
  return batch.prompt_lengths.size(0);
}

ResponseLogprobs DpoObjective::reference_logprobs(const data::PreferenceBatch& batch) {
  if (reference_->is_training()) reference_->eval();
  at::NoGradGuard no_grad;
  return response_logprobs(reference_, batch, options_.share_prefixes);
}

train::LossSum DpoObjective::loss(const data::PreferenceBatch& batch) {
  const ResponseLogprobs policy = response_logprobs(policy_, batch, options_.share_prefixes);
  const ResponseLogprobs reference = reference_logprobs(batch);
  const at::TensorOptions like = policy.chosen.options();
  const DpoLoss l = dpo_loss(policy.chosen, policy.rejected, reference.chosen.to(like),
                             reference.rejected.to(like), options_);
  train::LossSum out;
  out.metrics = dpo_metrics(l, policy);
  out.sum = options_.group_robust ? robust_loss_sum(l.losses, pair_groups(batch), out.metrics)
                                  : l.losses.sum();
  return out;
}

// ---- group-robust DPO ----------------------------------------------------------------------

at::Tensor DpoObjective::pair_groups(const data::PreferenceBatch& batch) const {
  CONCORD_CHECK(user_group_.defined(),
                "DpoObjective: group-robust DPO needs each user's group; call set_user_groups() "
                "before training");
  const int64_t pairs = batch.prompt_lengths.size(0);
  CONCORD_CHECK(batch.user_index.defined() && batch.user_index.dim() == 1 &&
                    batch.user_index.size(0) == pairs,
                "DpoObjective: group-robust DPO needs the batch's user_index [", pairs, "]");
  const at::Tensor users = batch.user_index.to(at::kCPU, at::kLong);
  const int64_t lowest = users.min().item<int64_t>();
  const int64_t highest = users.max().item<int64_t>();
  CONCORD_CHECK(lowest >= 0 && highest < user_group_.size(0), "DpoObjective: user index ",
                lowest < 0 ? lowest : highest, " has no group (set_user_groups gave groups for ",
                user_group_.size(0), " users)");
  return user_group_.index_select(0, users);
}

at::Tensor DpoObjective::robust_loss_sum(const at::Tensor& losses, const at::Tensor& groups,
                                         train::Metrics& metrics) {
  const int64_t G = num_groups();
  const double pairs = static_cast<double>(losses.size(0));
  const at::Tensor counts = at::bincount(groups, {}, G).to(at::kDouble);  // n_g
  const at::Tensor alpha = log_alpha_.exp();
  // Pair b weighs alpha_g B / n_g (g = its group), so sum / B = sum_g alpha_g mean_{b in g} l_b.
  const at::Tensor pair_weight = (alpha * pairs / counts.clamp_min(1)).index_select(0, groups);
  const at::Tensor sum = (losses * pair_weight.to(losses.options())).sum();

  const at::Tensor group_sums = at::zeros({G}, at::kDouble)
                                    .index_add_(0, groups, losses.detach().to(at::kCPU, at::kDouble));
  // Only training passes feed the weights' update (evaluation runs under InferenceMode).
  if (at::GradMode::is_enabled()) {
    pending_sum_ += group_sums;
    pending_count_ += counts;
  }
  const double* a = alpha.data_ptr<double>();
  const double* n = counts.data_ptr<double>();
  const double* s = group_sums.data_ptr<double>();
  for (int64_t g = 0; g < G; ++g) {
    const std::string id = std::to_string(g);
    metrics["robust/weight_" + id] = {a[g] * pairs, pairs};
    if (n[g] > 0) metrics["robust/loss_" + id] = {s[g], n[g]};
  }
  return sum;
}

void DpoObjective::set_user_groups(const at::Tensor& user_group, int64_t num_groups) {
  CONCORD_CHECK(user_group.defined() && user_group.dim() == 1 && user_group.numel() > 0,
                "DpoObjective::set_user_groups: user_group must be [U] (one group per user), got ",
                user_group.defined() ? user_group.sizes() : at::IntArrayRef{});
  CONCORD_CHECK(at::isIntegralType(user_group.scalar_type(), /*includeBool=*/false),
                "DpoObjective::set_user_groups: user_group must hold integer group ids, got ",
                user_group.scalar_type());
  CONCORD_CHECK(num_groups >= 0, "DpoObjective::set_user_groups: num_groups must be >= 0, got ",
                num_groups);
  const at::Tensor groups = user_group.to(at::kCPU, at::kLong).contiguous().clone();
  const int64_t lowest = groups.min().item<int64_t>();
  const int64_t highest = groups.max().item<int64_t>();
  const int64_t G = num_groups > 0 ? num_groups : highest + 1;
  CONCORD_CHECK(lowest >= 0 && highest < G, "DpoObjective::set_user_groups: group ",
                lowest < 0 ? lowest : highest, " is outside [0, ", G, ")");
  user_group_ = groups;
  if (G != this->num_groups()) {
    log_alpha_ = at::full({G}, -std::log(static_cast<double>(G)), at::kDouble);  // uniform
  }
  pending_sum_ = at::zeros({G}, at::kDouble);
  pending_count_ = at::zeros({G}, at::kDouble);
}

at::Tensor DpoObjective::group_weights() const {
  CONCORD_CHECK(log_alpha_.defined(),
                "DpoObjective: no group weights before set_user_groups() is called");
  return log_alpha_.exp();
}

void DpoObjective::set_group_weights(const at::Tensor& alpha) {
  CONCORD_CHECK(log_alpha_.defined(),
                "DpoObjective::set_group_weights: call set_user_groups() first");
  CONCORD_CHECK(alpha.defined() && alpha.dim() == 1 && alpha.size(0) == num_groups(),
                "DpoObjective::set_group_weights: alpha must be [", num_groups(), "], got ",
                alpha.defined() ? alpha.sizes() : at::IntArrayRef{});
  const at::Tensor a = alpha.to(at::kCPU, at::kDouble);
  CONCORD_CHECK(a.isfinite().all().item<bool>() && a.gt(0).all().item<bool>(),
                "DpoObjective::set_group_weights: every weight must be positive and finite");
  log_alpha_ = a.log() - a.sum().log();
}

void DpoObjective::update_group_weights() {
  if (!pending_count_.defined() || !pending_count_.gt(0).any().item<bool>()) return;
  // L_g: the mean loss of group g's pairs since the last update; 0 for absent groups, whose
  // log-weights then move only through the renormalisation.
  const at::Tensor mean_loss = pending_sum_ / pending_count_.clamp_min(1);
  const at::Tensor raised = log_alpha_ + options_.group_step_size * mean_loss;
  log_alpha_ = raised - raised.logsumexp(0);
  pending_sum_.zero_();
  pending_count_.zero_();
}

}  // namespace concord::rlhf
