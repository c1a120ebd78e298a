#include "reward_em_checkpoint.h"

#include <unistd.h>

#include <cmath>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/train/adamw.h"
#include "concord/train/checkpoint.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

constexpr const char* kProgressFile = "reward_em.json";

std::vector<train::NamedModule> named(const RewardEmWeights& w) {
  std::vector<train::NamedModule> modules;
  const auto add = [&](const rlhf::RewardSet* set, const std::string& prefix) {
    if (set == nullptr) return;
    for (auto [name, module] : set->named_modules()) modules.emplace_back(prefix + name, module);
  };
  add(w.current, "");
  add(w.best_restart, "best_restart.");
  add(w.best_k, "best_k.");
  return modules;
}

// No optimiser state to save: each M-step builds its own.
train::AdamW no_optimizer() { return train::AdamW(std::vector<std::pair<std::string, at::Tensor>>{}, {}); }

nlohmann::json score_json(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

fs::path save_reward_em_checkpoint(const fs::path& checkpoints_dir, const RewardEmProgress& p,
                                   const RewardEmWeights& weights, int64_t keep) {
  nlohmann::json j = {{"candidate", p.candidate},
                      {"step", p.step},
                      {"selection", p.selection},
                      {"k_rows", p.k_rows},
                      {"best_score", score_json(p.best_score)},
                      {"best_k", p.best_k},
                      {"best_fit", p.best_fit ? p.best_fit->state() : nlohmann::json()},
                      {"em", p.em}};
  // The progress file travels into the checkpoint before it is renamed into place.
  fs::create_directories(checkpoints_dir);
  const fs::path staged = checkpoints_dir / (".reward_em-" + std::to_string(::getpid()) + ".json");
  write_file_atomic(staged, j.dump() + "\n");
  train::TrainingState state;
  state.step = p.step;
  try {
    const fs::path out = train::save_checkpoint(checkpoints_dir, named(weights), no_optimizer(),
                                                state, keep, {{kProgressFile, staged}});
    return out;
  } catch (...) {
    std::error_code ec;
    fs::remove(staged, ec);
    throw;
  }
}

RewardEmProgress read_reward_em_progress(const fs::path& checkpoint) {
  const fs::path file = checkpoint / kProgressFile;
  const nlohmann::json j = load_json_file(file);
  try {
    RewardEmProgress p;
    p.candidate = j.at("candidate").get<int64_t>();
    p.step = j.at("step").get<int64_t>();
    p.selection = j.at("selection");
    p.k_rows = j.at("k_rows").get<std::vector<std::vector<std::string>>>();
    const auto& score = j.at("best_score");
    p.best_score = score.is_null() ? -std::numeric_limits<double>::infinity() : score.get<double>();
    p.best_k = j.at("best_k").get<int64_t>();
    if (!j.at("best_fit").is_null()) p.best_fit = rlhf::EmResult::from_state(j["best_fit"]);
    p.em = j.at("em");
    if (p.candidate < 0 || p.step < 0 || p.best_k < 0 || !p.selection.is_array() ||
        (p.best_k > 0) != p.best_fit.has_value()) {
      throw FormatError("inconsistent progress (candidate " + std::to_string(p.candidate) +
                        ", step " + std::to_string(p.step) + ", best K " +
                        std::to_string(p.best_k) + ")");
    }
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(file.string() + ": " + e.what());
  } catch (const FormatError& e) {
    throw FormatError(file.string() + ": " + e.what());
  }
}

void load_reward_em_weights(const fs::path& checkpoint, const RewardEmWeights& weights) {
  train::AdamW none = no_optimizer();
  train::load_checkpoint(checkpoint, named(weights), none);
}

}  // namespace concord::tasks
