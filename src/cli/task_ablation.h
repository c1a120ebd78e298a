// The `pangu_ablation` task of `concord run`: PanGu-π's Vanilla / SIAF / AS / SIAF+AS comparison
// (concord/train/ablation.h) on a text corpus, several seeds, with its report.
#pragma once
#include "tasks.h"

namespace concord::cli {
Task pangu_ablation_task();
}
