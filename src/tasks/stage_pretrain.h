// Quickstart stage `pretrain`: a tiny PanGu-π (SIAF + augmented shortcuts) and a Vanilla model of
// the same size trained on the built-in corpus with the same data, steps and seed; their
// validation losses, forward latency and per-layer feature diversity side by side. The PanGu-π
// model is saved to pretrain/models/siaf+as for the later stages.
#pragma once
#include "concord/tasks/quickstart.h"

namespace concord::tasks {

/// One seed of 8 steps (smoke), 2 seeds of 150 steps (quick, ~40 s), 3 seeds of 200 (full, ~1m45s).
Stage pretrain_stage(QuickstartSize size);

/// Where the stage leaves its PanGu-π model, relative to the quickstart folder.
inline constexpr const char* kQuickstartModel = "pretrain/models/siaf+as";

}  // namespace concord::tasks
