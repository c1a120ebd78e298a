#include "concord/rlhf/bradley_terry.h"

#include <algorithm>
#include <tuple>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"

namespace concord::rlhf {

std::pair<at::Tensor, at::Tensor> stack_pairs(const data::PreferenceBatch& batch, int64_t pad_id) {
  const int64_t tc = batch.chosen_ids.size(1), tr = batch.rejected_ids.size(1);
  const int64_t t = std::max(tc, tr);
  auto pad = [&](const at::Tensor& x, int64_t value) {
    if (x.size(1) == t) return x;
    return at::constant_pad_nd(x, {0, t - x.size(1)}, value);
  };
  at::Tensor ids = at::cat({pad(batch.chosen_ids, pad_id), pad(batch.rejected_ids, pad_id)}, 0);
  at::Tensor mask = at::cat({pad(batch.chosen_mask, 0), pad(batch.rejected_mask, 0)}, 0);
  return {ids, mask};
}

at::Tensor bradley_terry_loss(const at::Tensor& chosen, const at::Tensor& rejected,
                              const at::Tensor& margin, double center_rewards_coefficient) {
  at::Tensor d = chosen - rejected;
  if (margin.defined()) d = d - margin.to(d.device()).to(d.scalar_type());
  at::Tensor loss = -at::log_sigmoid(d);
  if (center_rewards_coefficient > 0) loss = loss + center_rewards_coefficient * (chosen + rejected).pow(2);
  return loss;
}

BradleyTerryObjective::BradleyTerryObjective(RewardSet rewards, BradleyTerryOptions options)
    : rewards_(std::move(rewards)), options_(options) {
  CONCORD_CHECK(rewards_.size() >= 1, "BradleyTerryObjective: no reward heads");
  CONCORD_CHECK(options_.center_rewards_coefficient >= 0,
                "center_rewards_coefficient must be >= 0, got ", options_.center_rewards_coefficient);
}

void BradleyTerryObjective::set_user_heads(at::Tensor user_head) {
  CONCORD_CHECK(user_head.dim() == 1, "set_user_heads: expected [U], got ", user_head.sizes());
  CONCORD_CHECK(user_head.numel() == 0 || user_head.max().item<int64_t>() < rewards_.size(),
                "set_user_heads: a head index is >= the ", rewards_.size(), " heads");
  user_head_ = user_head.to(at::kLong).cpu();
  gamma_ = at::Tensor();
}

void BradleyTerryObjective::set_user_weights(at::Tensor gamma) {
  CONCORD_CHECK(gamma.dim() == 2 && gamma.size(1) == rewards_.size(),
                "set_user_weights: expected [U, ", rewards_.size(), "], got ", gamma.sizes());
  gamma_ = gamma.to(at::kFloat).cpu();
  user_head_ = at::Tensor();
}

int64_t BradleyTerryObjective::count(const data::PreferenceBatch& batch) const {
  return batch.chosen_ids.size(0);
}

int64_t BradleyTerryObjective::inputs(const data::PreferenceBatch& batch) const {
  return batch.chosen_mask.sum().item<int64_t>() + batch.rejected_mask.sum().item<int64_t>();
}

train::LossSum BradleyTerryObjective::loss(const data::PreferenceBatch& batch) {
  const int64_t B = batch.chosen_ids.size(0);
  const c10::Device device = rewards_.models()[0]->score.device();
  const std::optional<SharedPrefixPairs> shared = shared_prefix_layout(batch, 0, options_.share_prefixes);
  at::Tensor ids, mask;
  if (!shared) {
    std::tie(ids, mask) = stack_pairs(batch, 0);
    ids = ids.to(device);
    mask = mask.to(device);
  }
  const at::Tensor margin =
      options_.use_margin ? batch.margin.to(device).to(at::kFloat) : at::zeros({B}, at::kFloat).to(device);
  const at::Tensor users = batch.user_index.to(at::kLong);

  at::Tensor rc, rr, per_pair, weight;  // rewards of the trained head; per-pair loss; pair weight
  if (gamma_.defined()) {
    CONCORD_CHECK(users.max().item<int64_t>() < gamma_.size(0),
                  "BradleyTerryObjective: a user index is outside the responsibility table");
    const at::Tensor r = shared ? rewards_.all(*shared) : rewards_.all(ids, mask);  // [2B, K]
    const at::Tensor g = gamma_.index_select(0, users).to(device);  // [B, K]
    const at::Tensor rck = r.narrow(0, 0, B), rrk = r.narrow(0, B, B);
    const at::Tensor lk = bradley_terry_loss(rck, rrk, margin.unsqueeze(1),
                                             options_.center_rewards_coefficient);
    per_pair = (g * lk).sum(1);
    // Metrics follow each pair's most responsible head.
    const at::Tensor top = g.argmax(1, /*keepdim=*/true);
    rc = rck.gather(1, top).squeeze(1);
    rr = rrk.gather(1, top).squeeze(1);
    weight = at::ones({B}, rc.options());
  } else {
    at::Tensor head = at::zeros({B}, at::kLong);
    if (user_head_.defined()) {
      CONCORD_CHECK(users.max().item<int64_t>() < user_head_.size(0),
                    "BradleyTerryObjective: a user index is outside the assignment table");
      head = user_head_.index_select(0, users);
    }
    weight = (head >= 0).to(at::kFloat).to(device);
    head = head.clamp_min(0);
    const at::Tensor r =
        shared ? rewards_.selected(*shared, head) : rewards_.selected(ids, mask, at::cat({head, head}));
    rc = r.narrow(0, 0, B);
    rr = r.narrow(0, B, B);
    per_pair = bradley_terry_loss(rc, rr, margin, options_.center_rewards_coefficient) * weight;
  }
  train::LossSum out;
  out.sum = per_pair.sum();
  const at::Tensor diff = (rc - rr).detach();
  const double n = weight.sum().item<double>();
  out.metrics["accuracy"] = {((diff > 0).to(at::kFloat) * weight).sum().item<double>(), n};
  out.metrics["margin"] = {(diff * weight).sum().item<double>(), n};
  out.metrics["rewards/chosen"] = {(rc.detach() * weight).sum().item<double>(), n};
  out.metrics["rewards/rejected"] = {(rr.detach() * weight).sum().item<double>(), n};
  return out;
}

at::Tensor pair_reward_differences(RewardSet& rewards, const data::PreferenceDataset& data,
                                   int64_t batch_size) {
  CONCORD_CHECK(batch_size > 0, "pair_reward_differences: batch_size must be positive");
  std::vector<bool> was_training;
  for (const auto& m : rewards.models()) was_training.push_back(m->is_training());
  rewards.train(false);
  const c10::Device device = rewards.models()[0]->score.device();
  at::Tensor out = at::empty({data.size(), rewards.size()}, at::kDouble);
  {
    c10::InferenceMode guard;
    for (int64_t start = 0; start < data.size(); start += batch_size) {
      std::vector<int64_t> idx;
      for (int64_t i = start; i < std::min(data.size(), start + batch_size); ++i) idx.push_back(i);
      const data::PreferenceBatch b = data.get_batch(idx);
      at::Tensor r;
      if (auto shared = shared_prefix_layout(b, data.pad_id())) {
        r = rewards.all(*shared);
      } else {
        auto [ids, mask] = stack_pairs(b, data.pad_id());
        r = rewards.all(ids.to(device), mask.to(device));
      }
      r = r.to(at::kDouble).cpu();
      const int64_t n = static_cast<int64_t>(idx.size());
      out.narrow(0, start, n).copy_(r.narrow(0, 0, n) - r.narrow(0, n, n));
    }
  }
  for (size_t k = 0; k < was_training.size(); ++k) rewards.models()[k]->train(was_training[k]);
  return out;
}

// ---- ClusterBalancedPairs -------------------------------------------------------------------

ClusterBalancedPairs::ClusterBalancedPairs(const data::PreferenceDataset& data,
                                           const std::vector<int64_t>& cluster_of_pair,
                                           int64_t batch_size, uint64_t seed, int64_t rank,
                                           int64_t world_size)
    : data_(data), batch_size_(batch_size), seed_(seed), rank_(rank), world_size_(world_size) {
  CONCORD_CHECK(batch_size > 0, "ClusterBalancedPairs: batch_size must be positive");
  CONCORD_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "ClusterBalancedPairs: rank ",
                rank, " outside [0, ", world_size, ")");
  CONCORD_CHECK(static_cast<int64_t>(cluster_of_pair.size()) == data.size(),
                "ClusterBalancedPairs: ", cluster_of_pair.size(), " cluster labels for ",
                data.size(), " pairs");
  int64_t clusters = 0;
  for (int64_t c : cluster_of_pair) clusters = std::max(clusters, c + 1);
  std::vector<std::vector<int64_t>> by(static_cast<size_t>(clusters));
  for (size_t p = 0; p < cluster_of_pair.size(); ++p) {
    if (cluster_of_pair[p] >= 0) by[static_cast<size_t>(cluster_of_pair[p])].push_back(static_cast<int64_t>(p));
  }
  for (auto& m : by) {
    if (m.empty()) continue;
    total_ += static_cast<int64_t>(m.size());
    members_.push_back(std::move(m));
  }
  CONCORD_CHECK(!members_.empty(), "ClusterBalancedPairs: no pair belongs to a cluster");
  order_.resize(members_.size());
  position_.assign(members_.size(), 0);
  pass_.assign(members_.size(), 0);
  for (size_t c = 0; c < members_.size(); ++c) shuffle(c);
}

void ClusterBalancedPairs::shuffle(size_t c) {
  order_[c] = members_[c];
  std::mt19937_64 rng(seed_ ^ (0x9e3779b97f4a7c15ULL * (c + 1)) ^ (static_cast<uint64_t>(pass_[c]) << 32));
  std::shuffle(order_[c].begin(), order_[c].end(), rng);
}

data::PreferenceBatch ClusterBalancedPairs::next() {
  std::vector<int64_t> idx;
  const auto clusters = static_cast<int64_t>(members_.size());
  const int64_t global = batch_size_ * world_size_;
  for (int64_t i = 0; i < global; ++i) {
    const auto c = static_cast<size_t>((slot_ + i) % clusters);
    if (position_[c] == static_cast<int64_t>(order_[c].size())) {
      ++pass_[c];
      position_[c] = 0;
      shuffle(c);
    }
    const int64_t pair = order_[c][static_cast<size_t>(position_[c]++)];
    if (i / batch_size_ == rank_) idx.push_back(pair);
  }
  slot_ = (slot_ + global) % clusters;
  return data_.get_batch(idx);
}

int64_t ClusterBalancedPairs::batches_per_epoch() const {
  const int64_t global = batch_size_ * world_size_;
  return std::max<int64_t>(1, (total_ + global - 1) / global);
}

nlohmann::json ClusterBalancedPairs::state() const {
  return {{"position", position_}, {"pass", pass_}, {"slot", slot_}};
}

void ClusterBalancedPairs::load_state(const nlohmann::json& state) {
  CONCORD_CHECK(state.is_object() && state.contains("position") && state.contains("pass") &&
                    state["position"].size() == members_.size(),
                "ClusterBalancedPairs: the saved cursor does not match these clusters");
  pass_ = state["pass"].get<std::vector<int64_t>>();
  for (size_t c = 0; c < members_.size(); ++c) shuffle(c);
  position_ = state["position"].get<std::vector<int64_t>>();
  slot_ = state["slot"].get<int64_t>();
}

}  // namespace concord::rlhf
