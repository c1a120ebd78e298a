// Training checkpoints (after llm.c: the state to resume exactly is saved beside the weights,
// with a magic number and a version).
//
//   <run>/checkpoints/step-00000200/
//       config.json, model.safetensors     the model as transformers saves it (loads in Python)
//       training_state.safetensors         optimizer moments and steps, the CPU RNG state, and in
//                                          its metadata: concord.magic, concord.version and
//                                          concord.state (JSON: step, data cursor, trainer's own)
//   <run>/checkpoints/latest               the name of the newest complete checkpoint
//
// A checkpoint is written into a temporary folder and renamed into place, then `latest` is
// rewritten atomically: a crash at any moment leaves the previous checkpoint intact and named.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/lm/causal_lm.h"
#include "concord/train/adamw.h"

namespace concord::train {

/// The value of concord.magic in training_state.safetensors.
inline constexpr const char* kTrainingStateMagic = "concord-training-state";
/// Bumped whenever the layout of the training state changes.
inline constexpr int kTrainingStateVersion = 1;

struct TrainingState {
  int64_t step = 0;         ///< optimizer steps done
  nlohmann::json data;      ///< the training data cursor (BatchSource::state())
  nlohmann::json extra;     ///< anything else the caller wants back (eval history, ...)
};

/// Writes a checkpoint of `model`, `optimizer` and `state` under `checkpoints_dir` as
/// step-<8 digits>, updates `latest`, then deletes all but the newest `keep` step folders
/// (keep <= 0: keep all). Returns the checkpoint folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& checkpoints_dir,
                                      lm::CausalLM model, const AdamW& optimizer,
                                      const TrainingState& state, int64_t keep = 0);

/// The newest complete checkpoint under `checkpoints_dir` (from `latest`), or nullopt.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& checkpoints_dir);

/// Loads a checkpoint folder into `model` and `optimizer` (which must be built for the same
/// architecture) and restores the CPU RNG; returns the saved TrainingState. A wrong magic,
/// a newer version or a missing entry throws naming the file.
TrainingState load_checkpoint(const std::filesystem::path& checkpoint, lm::CausalLM model,
                              AdamW& optimizer);

}  // namespace concord::train
