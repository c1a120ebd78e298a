// Tasks `koala_kd` and `koala_experiment` (KOALA, concord/diffusion): distilling a diffusers U-Net
// teacher into a student cut from it (self-attention or another feature map, optional EMA,
// checkpoints and --resume), and the feature-map comparison in miniature (results.json, chart).
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task koala_kd_task();
Task koala_experiment_task();
}
