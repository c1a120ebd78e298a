#include "concord/train/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace concord::train {

namespace {

#if TORCH_VERSION_MAJOR >= 2 && TORCH_VERSION_MINOR >= 4 || TORCH_VERSION_MAJOR >= 3
c10::DeviceType type_of(AutocastDevice d) { return d == AutocastDevice::cuda ? at::kCUDA : at::kCPU; }
bool autocast_enabled(AutocastDevice d) { return at::autocast::is_autocast_enabled(type_of(d)); }
at::ScalarType autocast_dtype(AutocastDevice d) { return at::autocast::get_autocast_dtype(type_of(d)); }
void set_autocast(AutocastDevice d, bool on, at::ScalarType dtype) {
  at::autocast::set_autocast_dtype(type_of(d), dtype);
  at::autocast::set_autocast_enabled(type_of(d), on);
}
#else
bool autocast_enabled(AutocastDevice d) {
  return d == AutocastDevice::cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
at::ScalarType autocast_dtype(AutocastDevice d) {
  return d == AutocastDevice::cuda ? at::autocast::get_autocast_gpu_dtype()
                                   : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast(AutocastDevice d, bool on, at::ScalarType dtype) {
  if (d == AutocastDevice::cuda) {
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(on);
  }
}
#endif

}  // namespace

AutocastGuard::AutocastGuard(bool enabled, at::ScalarType dtype, AutocastDevice device)
    : enabled_(enabled), device_(device) {
  if (!enabled_) return;
  was_enabled_ = autocast_enabled(device_);
  was_dtype_ = autocast_dtype(device_);
  set_autocast(device_, true, dtype);
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  set_autocast(device_, was_enabled_, was_dtype_);
  // Casted weight copies are cached for the duration of a region; drop them with it.
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace concord::train
