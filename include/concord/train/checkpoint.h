// Training checkpoints (after llm.c: the state to resume exactly is saved beside the weights,
// with a magic number and a version). A checkpoint holds every module the Trainer trains or
// keeps (policy + value head, K reward heads, student + EMA), each under its own name:
//
//   <run>/checkpoints/step-00000200/
//       modules/<name>.safetensors     the module's parameters and buffers, under the names of
//                                      its named_parameters()/named_buffers()
//       training_state.safetensors     optimizer moments and steps, the CPU RNG state, and in
//                                      its metadata: concord.magic, concord.version and
//                                      concord.state (JSON: step, data cursor, modules, extra)
//   <run>/checkpoints/latest           the name of the newest complete checkpoint
//
// A checkpoint is written into a temporary folder (every file fsynced), renamed into place (the
// folder fsynced), then `latest` is rewritten atomically: a crash or a full disk at any moment
// leaves the previous checkpoint intact and named.
// Exporting a module in a Hugging Face format (lm::save_pretrained) is a separate step: a
// checkpoint is for resuming, and modules without a HF format (value heads, EMA copies) need
// one too.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include "concord/train/adamw.h"

namespace concord::train {

/// A module under a name: what a Trainer trains and a checkpoint holds.
using NamedModule = std::pair<std::string, std::shared_ptr<torch::nn::Module>>;

/// The value of concord.magic in training_state.safetensors.
inline constexpr const char* kTrainingStateMagic = "concord-training-state";
/// Bumped whenever the layout of the training state changes. 2: named modules under modules/
/// (version 1 held one causal LM as a Hugging Face folder).
inline constexpr int kTrainingStateVersion = 2;

struct TrainingState {
  int64_t step = 0;         ///< optimizer steps done
  nlohmann::json data;      ///< the training data cursor (DataCursor::state())
  nlohmann::json extra;     ///< anything else the caller wants back (eval history, ...)
};

/// Writes a checkpoint of `modules`, `optimizer` and `state` under `checkpoints_dir` as
/// step-<8 digits>, updates `latest`, then deletes all but the newest `keep` step folders
/// (keep <= 0: keep all). `extra_files` (path inside the checkpoint, file) are moved in before
/// the checkpoint is renamed into place (ZeRO-1 ranks' optimiser shards: optimizer_shards.h).
/// Returns the checkpoint folder. A write that fails (a full disk, an unwritable folder) throws
/// concord::IoError "<checkpoint>: checkpoint not written (the latest is still step-...): <file>:
/// <reason>" after removing the partial checkpoint; `latest` and the checkpoint it names are
/// untouched. Temporary folders that crashed saves left behind are removed.
std::filesystem::path save_checkpoint(
    const std::filesystem::path& checkpoints_dir, const std::vector<NamedModule>& modules,
    const AdamW& optimizer, const TrainingState& state, int64_t keep = 0,
    const std::vector<std::pair<std::string, std::filesystem::path>>& extra_files = {});

/// The newest complete checkpoint under `checkpoints_dir` (from `latest`), or nullopt.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& checkpoints_dir);

/// Loads a checkpoint folder into `modules` and `optimizer` (built for the same architecture)
/// and restores the CPU RNG; returns the saved TrainingState. A wrong magic, another version, a
/// missing module or tensor, or a shape that differs throws naming the file.
TrainingState load_checkpoint(const std::filesystem::path& checkpoint,
                              const std::vector<NamedModule>& modules, AdamW& optimizer);

}  // namespace concord::train
