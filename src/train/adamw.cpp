#include "concord/train/adamw.h"

#include <c10/core/GradMode.h>

#include <cmath>
#include <set>

#include "concord/core/error.h"
#include "concord/ops/adamw.h"

namespace concord::train {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

void AdamWOptions::validate() const {
  CONCORD_CHECK(lr >= 0 && std::isfinite(lr), "AdamW: lr must be >= 0, got ", lr);
  CONCORD_CHECK(beta1 >= 0 && beta1 < 1, "AdamW: beta1 must be in [0, 1), got ", beta1);
  CONCORD_CHECK(beta2 >= 0 && beta2 < 1, "AdamW: beta2 must be in [0, 1), got ", beta2);
  CONCORD_CHECK(eps > 0, "AdamW: eps must be > 0, got ", eps);
  CONCORD_CHECK(weight_decay >= 0, "AdamW: weight_decay must be >= 0, got ", weight_decay);
}

nlohmann::json AdamWOptions::to_json() const {
  return {{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}, {"weight_decay", weight_decay}};
}

bool decays_weight(const std::string& name, const at::Tensor& param) {
  return param.dim() >= 2 && ends_with(name, "weight");
}

AdamW::AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options)
    : AdamW(std::vector<ParamGroup>{ParamGroup{"default", std::move(params), {}, {}}}, options) {}

AdamW::AdamW(std::vector<ParamGroup> groups, AdamWOptions options)
    : options_(options), lr_(options.lr) {
  options_.validate();
  std::set<std::string> seen, group_names;
  for (auto& group : groups) {
    CONCORD_CHECK(group_names.insert(group.name).second, "AdamW: parameter group '", group.name,
                  "' given twice");
    const double peak = group.lr.value_or(options_.lr);
    const double decay = group.weight_decay.value_or(options_.weight_decay);
    CONCORD_CHECK(peak >= 0 && std::isfinite(peak), "AdamW: group '", group.name,
                  "': lr must be >= 0, got ", peak);
    CONCORD_CHECK(decay >= 0, "AdamW: group '", group.name, "': weight_decay must be >= 0, got ",
                  decay);
    // A group at the base rate keeps ratio exactly 1, so its steps are bit-identical to a
    // single-group optimiser's.
    const double ratio = peak == options_.lr ? 1.0 : (options_.lr > 0 ? peak / options_.lr : 0.0);
    CONCORD_CHECK(options_.lr > 0 || peak == 0, "AdamW: group '", group.name, "' has lr ", peak,
                  " but the base lr is 0 (the schedule scales every group from the base)");
    for (auto& [name, param] : group.params) {
      CONCORD_CHECK(seen.insert(name).second, "AdamW: parameter name '", name, "' given twice");
      Slot slot;
      slot.name = name;
      slot.param = param;
      slot.decay = decays_weight(name, param);
      slot.lr_ratio = ratio;
      slot.weight_decay = decay;
      slots_.push_back(std::move(slot));
    }
  }
}

std::vector<std::pair<std::string, at::Tensor>> AdamW::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(slots_.size());
  for (const auto& slot : slots_) out.emplace_back(slot.name, slot.param);
  return out;
}

std::vector<at::Tensor> AdamW::parameters() const {
  std::vector<at::Tensor> out;
  out.reserve(slots_.size());
  for (const auto& slot : slots_) out.push_back(slot.param);
  return out;
}

void AdamW::zero_grad() {
  for (auto& slot : slots_) {
    if (slot.param.grad().defined()) slot.param.mutable_grad() = at::Tensor();
  }
}

void AdamW::step() {
  at::NoGradGuard no_grad;
  for (auto& slot : slots_) {
    if (slot.param.grad().defined()) update(slot);
  }
}

void AdamW::update(Slot& slot) {
  at::Tensor& p = slot.param;
  const at::Tensor& grad = slot.param.grad();
  if (!slot.exp_avg.defined()) {
    slot.exp_avg = at::zeros_like(p, at::MemoryFormat::Contiguous);
    slot.exp_avg_sq = at::zeros_like(p, at::MemoryFormat::Contiguous);
  }
  slot.step += 1;
  const double lr = slot.lr_ratio == 1.0 ? lr_ : lr_ * slot.lr_ratio;
  const double decay_factor = slot.decay ? 1.0 - lr * slot.weight_decay : 1.0;
  const double bc1 = 1.0 - std::pow(options_.beta1, static_cast<double>(slot.step));
  const double bc2 = 1.0 - std::pow(options_.beta2, static_cast<double>(slot.step));

  ops::AdamWStep step;
  step.decay_factor = decay_factor;
  step.beta1 = options_.beta1;
  step.beta2 = options_.beta2;
  step.step_size = lr / bc1;
  step.bias_correction2 = bc2;
  step.eps = options_.eps;
  ops::adamw_update_(p, grad.contiguous(), slot.exp_avg, slot.exp_avg_sq, step);
}

std::map<std::string, at::Tensor> AdamW::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& slot : slots_) {
    if (slot.step == 0) continue;
    out[slot.name + ".exp_avg"] = slot.exp_avg.cpu();
    out[slot.name + ".exp_avg_sq"] = slot.exp_avg_sq.cpu();
    out[slot.name + ".step"] = at::scalar_tensor(slot.step, at::kLong);
  }
  return out;
}

void AdamW::load_state_dict(const std::map<std::string, at::Tensor>& state,
                            const std::string& source) {
  std::set<std::string> used;
  for (auto& slot : slots_) {
    auto step = state.find(slot.name + ".step");
    if (step == state.end()) {
      slot.step = 0;
      slot.exp_avg = slot.exp_avg_sq = at::Tensor();
      continue;
    }
    // An integer in [1, 2^53]: the bias correction needs k >= 1, and a count near INT64_MAX
    // would overflow at the next step.
    const at::Tensor& k = step->second;
    CONCORD_CHECK(k.numel() == 1 && at::isIntegralType(k.scalar_type(), /*includeBool=*/false),
                  source, ": optimizer entry '", step->first, "' must be an integer scalar, got ",
                  k.scalar_type(), " of shape ", k.sizes());
    const int64_t count = k.item<int64_t>();
    CONCORD_CHECK(count >= 1 && count <= (int64_t{1} << 53), source, ": optimizer entry '",
                  step->first, "' is ", count, ", outside [1, 2^53]");
    slot.step = count;
    for (const char* part : {".exp_avg", ".exp_avg_sq"}) {
      const std::string key = slot.name + part;
      auto it = state.find(key);
      CONCORD_CHECK(it != state.end(), source, ": optimizer entry '", key, "' is missing");
      CONCORD_CHECK(it->second.sizes() == slot.param.sizes(), source, ": optimizer entry '", key,
                    "' has shape ", it->second.sizes(), ", the parameter ", slot.param.sizes());
      at::Tensor t = it->second.to(slot.param.device(), slot.param.scalar_type()).contiguous().clone();
      (std::string(part) == ".exp_avg" ? slot.exp_avg : slot.exp_avg_sq) = t;
      used.insert(key);
    }
    used.insert(step->first);
  }
  for (const auto& [key, value] : state) {
    CONCORD_CHECK(used.count(key), source, ": optimizer entry '", key,
                  "' matches no parameter of this model");
  }
}

}  // namespace concord::train
