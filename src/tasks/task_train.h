// The `pretrain` and `sft` tasks of `concord run`: a causal LM trained by concord::train::Trainer
// on pretraining text (JSONL {"text"} or the built-in corpus) or on SFT records (JSONL
// prompt/completion or messages, completion-only loss), with checkpoints and --resume.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {

Task pretrain_task();
Task sft_task();

}  // namespace concord::tasks
