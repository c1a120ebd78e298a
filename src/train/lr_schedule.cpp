#include "concord/train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "concord/core/error.h"
#include "concord/core/registry.h"

namespace concord::train {

namespace {

// The decay after warm-up: the fraction of (eta - eta_min) left at progress p in [0, 1].
using Decay = std::function<double(double progress)>;

const Registry<Decay>& decays() {
  static const Registry<Decay> registry = [] {
    Registry<Decay> r("lr schedule");
    r.add("cosine", [](double p) { return 0.5 * (1.0 + std::cos(M_PI * p)); });
    r.add("linear", [](double p) { return 1.0 - p; });
    r.add("constant", [](double) { return 1.0; });
    return r;
  }();
  return registry;
}

}  // namespace

void LrScheduleOptions::validate() const {
  decays().get(name);
  CONCORD_CHECK(peak_lr > 0 && std::isfinite(peak_lr), "key 'lr': must be a positive number, got ",
                peak_lr);
  CONCORD_CHECK(total_steps > 0, "key 'max_steps': must be positive, got ", total_steps);
  CONCORD_CHECK(warmup_steps >= 0 && warmup_steps <= total_steps,
                "key 'warmup_steps': must be in [0, max_steps = ", total_steps, "], got ",
                warmup_steps);
  CONCORD_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1,
                "key 'min_lr_ratio': must be in [0, 1], got ", min_lr_ratio);
}

nlohmann::json LrScheduleOptions::to_json() const {
  return {{"name", name},
          {"peak_lr", peak_lr},
          {"warmup_steps", warmup_steps},
          {"total_steps", total_steps},
          {"min_lr_ratio", min_lr_ratio}};
}

double learning_rate(const LrScheduleOptions& o, int64_t step) {
  const Decay& decay = decays().get(o.name);
  if (step < o.warmup_steps) {
    return o.peak_lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  const int64_t span = o.total_steps - o.warmup_steps;
  const double progress =
      span <= 0 ? 1.0
                : std::clamp(static_cast<double>(step - o.warmup_steps) / static_cast<double>(span),
                             0.0, 1.0);
  const double floor = o.min_lr_ratio * o.peak_lr;
  return floor + (o.peak_lr - floor) * decay(progress);
}

std::string lr_schedule_names() { return decays().joined_names(); }

}  // namespace concord::train
