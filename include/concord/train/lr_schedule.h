// Learning-rate schedules, keyed by name (after tiny-cuda-nn's registries): the rate at optimizer
// step s (0-based) for a run of S steps with W warm-up steps and peak rate eta:
//
//   warm-up   s <  W:  eta * (s + 1) / W                       (linear, never 0 at step 0)
//   cosine    s >= W:  eta_min + (eta - eta_min) * (1 + cos(pi * p)) / 2,  p = (s - W) / (S - W)
//   linear    s >= W:  eta_min + (eta - eta_min) * (1 - p)
//   constant  s >= W:  eta
//
// with eta_min = min_lr_ratio * eta. Warm-up then cosine decay is the schedule of GPT-3, Llama
// and PanGu-π's training recipes; the floor keeps late steps useful (Llama uses 10%).
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace concord::train {

struct LrScheduleOptions {
  std::string name = "cosine";  ///< cosine, linear or constant
  double peak_lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;      ///< S: the step count the decay spans
  double min_lr_ratio = 0.1;    ///< eta_min / eta

  /// Checks the values; errors name the key.
  void validate() const;
  nlohmann::json to_json() const;
};

/// The rate at optimizer step `step` (0-based). Steps past total_steps keep the final rate.
double learning_rate(const LrScheduleOptions& options, int64_t step);

/// "constant, cosine, linear".
std::string lr_schedule_names();

}  // namespace concord::train
