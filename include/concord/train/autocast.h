// Mixed precision on CUDA: inside an AutocastGuard, matmuls and convolutions run in bf16 (or
// fp16) while the parameters, the optimizer state and the reductions stay in fp32, as
// torch.autocast does. The one place where LibTorch 1.13 and 2.x spell the API differently.
#pragma once
#include <ATen/ATen.h>

namespace concord::train {

class AutocastGuard {
 public:
  /// Turns autocast on for CUDA with `dtype` when `enabled`; does nothing otherwise.
  AutocastGuard(bool enabled, at::ScalarType dtype = at::kBFloat16);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  bool was_enabled_ = false;
};

}  // namespace concord::train
