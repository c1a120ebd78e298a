// Tasks `koala_kd` and `koala_experiment` (KOALA, concord/diffusion): distilling a diffusers U-Net
// teacher into a student cut from it (self-attention or another feature map, optional EMA,
// checkpoints and --resume), and the feature-map comparison in miniature (results.json, chart).
#pragma once
#include "concord/tasks/quickstart.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task koala_kd_task();
Task koala_experiment_task();

/// The quickstart stage: a tiny teacher on synthetic latents distilled into a KOALA-style
/// student with self-attention KD and without feature KD; prints both students' errors: 2 seeds
/// (quick), 3 (full); one small seed (smoke).
Stage koala_stage(QuickstartSize size);
}
