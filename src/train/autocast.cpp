#include "concord/train/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace concord::train {

namespace {

#if TORCH_VERSION_MAJOR >= 2 && TORCH_VERSION_MINOR >= 4 || TORCH_VERSION_MAJOR >= 3
bool cuda_autocast_enabled() { return at::autocast::is_autocast_enabled(at::kCUDA); }
void set_cuda_autocast(bool on, at::ScalarType dtype) {
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, on);
}
#else
bool cuda_autocast_enabled() { return at::autocast::is_enabled(); }
void set_cuda_autocast(bool on, at::ScalarType dtype) {
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(on);
}
#endif

}  // namespace

AutocastGuard::AutocastGuard(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
  if (!enabled_) return;
  was_enabled_ = cuda_autocast_enabled();
  set_cuda_autocast(true, dtype);
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  set_cuda_autocast(was_enabled_, at::kBFloat16);
  // Casted weight copies are cached for the duration of a region; drop them with it.
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace concord::train
