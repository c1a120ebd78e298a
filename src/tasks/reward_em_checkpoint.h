// Checkpoints of the reward_em task: after every EM iteration, everything needed to continue
// the choice of K exactly where it stopped.
//
//   checkpoints/step-<EM iterations so far>/
//       modules/<name>.safetensors               the K reward models under way
//       modules/best_restart.<name>.safetensors  the best finished restart's (restarts > 1)
//       modules/best_k.<name>.safetensors        the best K's fitted mixture so far
//       reward_em.json                           the K selection and RewardMixtureEm::state()
//       training_state.safetensors               the CPU RNG (no optimiser: each M-step has a
//                                                new one)
//
// reward_em.json is read before the weights, because it says which modules exist (the best K's
// mixture has its own number of models).
#pragma once
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/rlhf/em.h"
#include "concord/rlhf/reward_model.h"

namespace concord::tasks {

/// Where the choice of K stands between two EM iterations.
struct RewardEmProgress {
  int64_t candidate = 0;           ///< index of the K under way in the candidate list
  int64_t step = 0;                ///< EM iterations done over all K (the metrics' step)
  nlohmann::json selection = nlohmann::json::array();  ///< finished K: train and held-out fit
  std::vector<std::vector<std::string>> k_rows;         ///< their report rows
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t best_k = 0;              ///< K of the best finished mixture (0: none yet)
  std::optional<rlhf::EmResult> best_fit;
  nlohmann::json em;               ///< the K under way's RewardMixtureEm::state(); null: not begun
};

/// The modules of a reward_em checkpoint.
struct RewardEmWeights {
  rlhf::RewardSet* current = nullptr;       ///< the K under way's (null between two K)
  rlhf::RewardSet* best_restart = nullptr;  ///< its best finished restart's, when kept
  rlhf::RewardSet* best_k = nullptr;        ///< the best finished K's
};

/// Writes a checkpoint at `progress.step` under `checkpoints_dir`, keeping the newest `keep`.
std::filesystem::path save_reward_em_checkpoint(const std::filesystem::path& checkpoints_dir,
                                                const RewardEmProgress& progress,
                                                const RewardEmWeights& weights, int64_t keep);

/// Reads reward_em.json of `checkpoint`; a malformed one is a FormatError naming the file.
RewardEmProgress read_reward_em_progress(const std::filesystem::path& checkpoint);

/// Loads the weights of `checkpoint` into `weights` (built with the saved layouts) and restores
/// the CPU RNG.
void load_reward_em_weights(const std::filesystem::path& checkpoint, const RewardEmWeights& weights);

}  // namespace concord::tasks
