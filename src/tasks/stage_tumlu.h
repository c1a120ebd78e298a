// Quickstart stage `tumlu`: the pretrain stage's PanGu-π model evaluated on TUMLU-mini (one
// language per script: Turkish, Kazakh, Uyghur; `--smoke` always uses the sample; 2 test items per subject, 5 at full size) with the
// benchmark's generative 5-shot protocol and the log-likelihood protocol, a per-language table
// for each. Uses ../shared/data/tumlu-mini (or $CONCORD_TUMLU_DIR) when present, else a small
// sample Concord writes itself (arithmetic items in a Latin-, a Cyrillic- and an Arabic-script
// language), so the stage runs anywhere. A byte-level model this small, trained for seconds on
// English, is expected near chance: the stage shows the pipeline, not a capability.
#pragma once
#include <filesystem>

#include "concord/tasks/quickstart.h"

namespace concord::tasks {

/// `model_dir`: the pretrain stage's saved model folder.
Stage tumlu_stage(const std::filesystem::path& model_dir, QuickstartSize size);

/// Writes the built-in sample in TUMLU's layout under `root` (turkish, kazakh, uyghur: 5 dev
/// and `test_items` test arithmetic items each).
void write_builtin_tumlu_sample(const std::filesystem::path& root, int test_items);

}  // namespace concord::tasks
