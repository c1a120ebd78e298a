// Tasks `ppo` and `dpo` (MaxMin-RLHF, concord/rlhf): policy optimisation of a causal LM.
//   ppo: PPO (or GRPO: algorithm "grpo") against frozen reward models from `reward` or
//        `reward_em`, their scores combined by an aggregator (min and argmin_group are MaxMin;
//        single is conventional RLHF); checkpoints every few iterations and --resume.
//   dpo: DPO on preference pairs against a frozen reference, with the group-robust variant over
//        planted groups or the clusters of a reward_em run.
// Both save the policy as a transformers causal-LM folder.
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task ppo_task();
Task dpo_task();
}
