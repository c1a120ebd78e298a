// Tasks `reward` and `reward_em` (MaxMin-RLHF, concord/rlhf): a Bradley-Terry reward model
// trained on preference JSONL, and an EM-learned mixture of K of them over users, with the
// choice of K by held-out likelihood. Both save transformers `...ForSequenceClassification`
// folders; reward_em also writes em.json (assignments, likelihood per iteration, per-cluster
// accuracy, purity and NMI against planted groups when the data has "group").
#pragma once
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task reward_task();
Task reward_em_task();
}
