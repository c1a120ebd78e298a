// Mixed precision: inside an AutocastGuard, matmuls and convolutions on tensors of one device
// type run in bf16 (or fp16) while the parameters, the optimizer state and the reductions stay in
// fp32, as torch.autocast does. The one place where LibTorch 1.13 and 2.x spell the API
// differently.
#pragma once
#include <ATen/ATen.h>

namespace concord::train {

enum class AutocastDevice { cuda, cpu };

class AutocastGuard {
 public:
  /// Turns autocast on for `device`'s tensors with `dtype` when `enabled`; does nothing
  /// otherwise. The previous state comes back when the guard ends.
  explicit AutocastGuard(bool enabled, at::ScalarType dtype = at::kBFloat16,
                         AutocastDevice device = AutocastDevice::cuda);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  AutocastDevice device_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace concord::train
