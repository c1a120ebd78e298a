// AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), with PyTorch's update so
// a Concord run and a torch.optim.AdamW run take the same steps. For a parameter p with gradient
// g at its k-th update (k = 1, 2, ...):
//
//   p   <- p * (1 - lr * lambda)                           (decoupled decay; lambda = 0 if exempt)
//   m   <- beta1 * m + (1 - beta1) * g
//   v   <- beta2 * v + (1 - beta2) * g^2
//   p   <- p - (lr / (1 - beta1^k)) * m / (sqrt(v) / sqrt(1 - beta2^k) + eps)
//
// Why our own and not torch::optim::AdamW: its state is keyed by tensor addresses, which makes a
// checkpoint that survives a restart awkward and differs between LibTorch versions; here the
// state is named after the parameters, so it saves to safetensors and a resumed run continues
// bit for bit. The arithmetic is ops::adamw_update_ (ops/adamw.h): on CPU, fp32 contiguous
// parameters take one vectorised pass over p, g, m and v (the composite takes six passes over
// memory); elsewhere the same update runs as ATen ops.
//
// Weight decay applies to weight matrices only (parameters whose name ends in "weight" with two
// or more dimensions): biases, norm gains and SIAF's per-channel a_i, b_i are exempt, as in
// GPT-2/Llama training recipes.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace concord::train {

struct AdamWOptions {
  double lr = 3e-4;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  ///< lambda

  void validate() const;
  nlohmann::json to_json() const;
};

/// True for the parameters AdamW decays (the rule in the header comment).
bool decays_weight(const std::string& name, const at::Tensor& param);

/// Parameters that share a peak learning rate and a weight decay (the head of a reward model at
/// 10x the backbone's rate, a frozen embedding at rate 0).
struct ParamGroup {
  std::string name = "default";
  /// Named parameters; names are unique across all groups of one optimiser.
  std::vector<std::pair<std::string, at::Tensor>> params;
  std::optional<double> lr;            ///< peak learning rate (default: AdamWOptions::lr)
  std::optional<double> weight_decay;  ///< lambda of its decayed parameters (default: AdamWOptions)
};

class AdamW {
 public:
  /// `params`: named parameters (module->named_parameters() order); names must be unique.
  AdamW(std::vector<std::pair<std::string, at::Tensor>> params, AdamWOptions options);
  /// Several groups, each with its own peak rate and decay (unset ones take `options`').
  AdamW(std::vector<ParamGroup> groups, AdamWOptions options);

  /// Sets the rate of the next step() for groups at options().lr; a group with its own peak rate
  /// follows at the same fraction of its peak (schedules call this every step).
  void set_lr(double lr) { lr_ = lr; }
  double lr() const { return lr_; }
  const AdamWOptions& options() const { return options_; }
  /// Parameters under optimisation, in group order.
  std::vector<at::Tensor> parameters() const;
  /// The same, with their names.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

  /// One update of every parameter that has a gradient (others keep their state untouched).
  void step();
  /// Drops every gradient (set to undefined, as set_to_none=True).
  void zero_grad();

  /// The state as named tensors: "<param>.exp_avg", "<param>.exp_avg_sq" (CPU copies) and
  /// "<param>.step" (int64 scalar). Parameters not yet updated have no entries.
  std::map<std::string, at::Tensor> state_dict() const;
  /// Restores a state_dict(); a missing, unknown or misshapen entry throws naming it and
  /// `source`.
  void load_state_dict(const std::map<std::string, at::Tensor>& state, const std::string& source);

 private:
  struct Slot {
    std::string name;
    at::Tensor param;
    bool decay = false;
    double lr_ratio = 1.0;      // the group's peak rate / options_.lr
    double weight_decay = 0.0;  // lambda of the group
    int64_t step = 0;
    at::Tensor exp_avg, exp_avg_sq;
  };
  void update(Slot& slot);
  std::vector<Slot> slots_;
  AdamWOptions options_;
  double lr_;
};

}  // namespace concord::train
