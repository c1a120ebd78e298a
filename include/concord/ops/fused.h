// Process-wide switch between the fused kernels of the ops layer and their composite ATen
// references (PanGu-π, arXiv 2312.17276: SIAF Eq. 7, augmented shortcut Eq. 4, and the MSA
// blocks' attention; SDXL's GEGLU). With the switch off, `siaf`, `augmented_shortcut`,
// `attention` and `geglu` run `siaf_reference`, `augmented_shortcut_reference`,
// `attention_reference` and `geglu_reference` under autograd,
// exactly what they fall back to on a device or dtype without a fused kernel; results agree
// within floating-point tolerance either way. It exists to measure the fused kernels against the
// composite in a whole model (benchmarks/bench_pangu_step.cpp) and to bisect a numerical
// difference to one side. Explicit no-autograd entry points (`siaf_forward`, `attention_decode`,
// ...) and the `*_is_fused` queries follow the switch as well.
#pragma once

namespace concord::ops {

/// Turns the fused kernels on (the default) or off for every thread of the process.
void set_fused_ops_enabled(bool enabled);
/// Whether the fused kernels are on.
bool fused_ops_enabled();

/// Sets the switch for a scope and restores the previous value when it ends.
class FusedOpsGuard {
 public:
  explicit FusedOpsGuard(bool enabled) : previous_(fused_ops_enabled()) {
    set_fused_ops_enabled(enabled);
  }
  ~FusedOpsGuard() { set_fused_ops_enabled(previous_); }
  FusedOpsGuard(const FusedOpsGuard&) = delete;
  FusedOpsGuard& operator=(const FusedOpsGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace concord::ops
