// How K group rewards become the one scalar a policy optimiser maximises. MaxMin-RLHF's
// egalitarian objective (its "MaxMin alignment" section) is max_pi min_u E_{x,y~pi}[r_u(x, y)] - beta KL; the paper's
// algorithm and its public code reach it two ways, and conventional RLHF is a third:
//
//   min           per sample, min_k r_k(x, y)                      (the public code)
//   argmin_group  r_{k*} with k* = argmin_k mean_batch r_k, chosen  (the paper's Algorithm 1:
//                 afresh each iteration                             the worst-off group's reward)
//   softmin       sum_k softmax(-r / tau)_k r_k: between min (tau -> 0) and mean (tau -> inf)
//   mean          (1/K) sum_k r_k                                   (utilitarian)
//   single        r_h of one head h: a single reward model on pooled data is conventional RLHF
//
// Aggregators are looked up by name in a registry, so a new one is one make_* and a line.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/core/options.h"

namespace concord::rlhf {

struct AggregatorOptions {
  std::string name = "min";
  double temperature = 1.0;  ///< softmin's tau
  int64_t head = 0;          ///< single's h
};

/// The keys of a config's "aggregator" section; name is checked against the registry.
const OptionsSchema<AggregatorOptions>& aggregator_options_schema();

class RewardAggregator {
 public:
  virtual ~RewardAggregator() = default;
  /// rewards [B, K] -> the scores [B] the policy maximises.
  virtual at::Tensor combine(const at::Tensor& rewards) = 0;
  /// What the last combine() decided, for the metrics (argmin_group: the group chosen).
  virtual nlohmann::json last_choice() const { return nullptr; }
};

using AggregatorFactory = std::function<std::unique_ptr<RewardAggregator>(const AggregatorOptions&)>;

/// Adds (or replaces) a named aggregator.
void register_aggregator(const std::string& name, AggregatorFactory factory);
/// The registered names, sorted.
std::vector<std::string> aggregator_names();
/// The aggregator options.name names; an unknown name is a ConfigError listing the valid ones.
std::unique_ptr<RewardAggregator> make_aggregator(const AggregatorOptions& options);

}  // namespace concord::rlhf
