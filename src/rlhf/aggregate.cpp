#include "concord/rlhf/aggregate.h"

#include <map>
#include <mutex>

#include "concord/core/error.h"

namespace concord::rlhf {

namespace {

void check_rewards(const at::Tensor& r) {
  CONCORD_CHECK(r.dim() == 2 && r.size(1) >= 1, "aggregator: rewards must be [B, K], got ",
                r.sizes());
}

class MinAggregator final : public RewardAggregator {
 public:
  at::Tensor combine(const at::Tensor& r) override {
    check_rewards(r);
    return std::get<0>(r.min(1));
  }
};

class ArgminGroupAggregator final : public RewardAggregator {
 public:
  at::Tensor combine(const at::Tensor& r) override {
    check_rewards(r);
    chosen_ = r.mean(0).argmin().item<int64_t>();
    return r.select(1, chosen_);
  }
  nlohmann::json last_choice() const override { return chosen_; }

 private:
  int64_t chosen_ = -1;
};

class SoftminAggregator final : public RewardAggregator {
 public:
  explicit SoftminAggregator(double tau) : tau_(tau) {}
  at::Tensor combine(const at::Tensor& r) override {
    check_rewards(r);
    return (at::softmax(-r / tau_, 1) * r).sum(1);
  }

 private:
  double tau_;
};

class MeanAggregator final : public RewardAggregator {
 public:
  at::Tensor combine(const at::Tensor& r) override {
    check_rewards(r);
    return r.mean(1);
  }
};

class SingleAggregator final : public RewardAggregator {
 public:
  explicit SingleAggregator(int64_t head) : head_(head) {}
  at::Tensor combine(const at::Tensor& r) override {
    check_rewards(r);
    CONCORD_CHECK(head_ < r.size(1), "aggregator single: head ", head_, " but only ", r.size(1),
                  " rewards");
    return r.select(1, head_);
  }

 private:
  int64_t head_;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, AggregatorFactory> factories;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->factories["min"] = [](const AggregatorOptions&) { return std::make_unique<MinAggregator>(); };
    reg->factories["argmin_group"] = [](const AggregatorOptions&) {
      return std::make_unique<ArgminGroupAggregator>();
    };
    reg->factories["softmin"] = [](const AggregatorOptions& o) {
      return std::make_unique<SoftminAggregator>(o.temperature);
    };
    reg->factories["mean"] = [](const AggregatorOptions&) { return std::make_unique<MeanAggregator>(); };
    reg->factories["single"] = [](const AggregatorOptions& o) {
      return std::make_unique<SingleAggregator>(o.head);
    };
    return reg;
  }();
  return *r;
}

}  // namespace

const OptionsSchema<AggregatorOptions>& aggregator_options_schema() {
  static const OptionsSchema<AggregatorOptions> schema = [] {
    OptionsSchema<AggregatorOptions> s("aggregator");
    s.field("name", &AggregatorOptions::name,
            "min | argmin_group | softmin | mean | single (or a registered one)")
        .field("temperature", &AggregatorOptions::temperature, "softmin's tau",
               opt::greater_than(0))
        .field("head", &AggregatorOptions::head, "single: the reward head used", opt::at_least(0));
    return s;
  }();
  return schema;
}

void register_aggregator(const std::string& name, AggregatorFactory factory) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> aggregator_names() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, f] : r.factories) names.push_back(name);
  return names;
}

std::unique_ptr<RewardAggregator> make_aggregator(const AggregatorOptions& options) {
  AggregatorFactory factory;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.factories.find(options.name);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory) {
    std::string valid;
    for (const auto& n : aggregator_names()) valid += (valid.empty() ? "" : ", ") + n;
    fail_config("aggregator", "key 'name': unknown aggregator '", options.name, "' (valid: ",
                valid, ")");
  }
  aggregator_options_schema().validate(options, "aggregator");
  return factory(options);
}

}  // namespace concord::rlhf
