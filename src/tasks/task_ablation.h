// The `pangu_ablation` task of `concord run`: PanGu-π's Vanilla / SIAF / AS / SIAF+AS comparison
// (concord/train/ablation.h) on a text corpus, several seeds, with its report.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task pangu_ablation_task();
}
