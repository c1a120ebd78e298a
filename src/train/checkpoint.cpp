#include "concord/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/safetensors.h"
#include "concord/lm/hf_checkpoint.h"

namespace concord::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "training_state.safetensors";
constexpr const char* kRngKey = "__rng.cpu";

std::string step_folder_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

// Step folders under `dir`, oldest first.
std::vector<fs::path> step_folders(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step-", 0) == 0 && name.find(".tmp") == std::string::npos) {
      out.push_back(entry.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

fs::path save_checkpoint(const fs::path& checkpoints_dir, lm::CausalLM model,
                         const AdamW& optimizer, const TrainingState& state, int64_t keep) {
  fs::create_directories(checkpoints_dir);
  const std::string name = step_folder_name(state.step);
  const fs::path final_dir = checkpoints_dir / name;
  const fs::path tmp_dir = checkpoints_dir / (name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  lm::save_pretrained(model, tmp_dir);
  std::map<std::string, at::Tensor> tensors = optimizer.state_dict();
  {
    // The default generator is shared process-wide; read its state under its own lock.
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    tensors[kRngKey] = gen.get_state();
  }
  const nlohmann::json meta = {{"step", state.step}, {"data", state.data}, {"extra", state.extra}};
  io::save_safetensors(tmp_dir / kStateFile, tensors,
                       {{"concord.magic", kTrainingStateMagic},
                        {"concord.version", std::to_string(kTrainingStateVersion)},
                        {"concord.state", meta.dump()}});

  // Replace a checkpoint of the same step (a resumed run passing it again) only once the new
  // one is complete.
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  fs::rename(tmp_dir, final_dir);
  write_file_atomic(checkpoints_dir / "latest", name + "\n");

  if (keep > 0) {
    auto folders = step_folders(checkpoints_dir);
    const int64_t extra = static_cast<int64_t>(folders.size()) - keep;
    for (int64_t i = 0; i < extra; ++i) {
      if (folders[static_cast<size_t>(i)] != final_dir) fs::remove_all(folders[static_cast<size_t>(i)]);
    }
  }
  return final_dir;
}

std::optional<fs::path> latest_checkpoint(const fs::path& checkpoints_dir) {
  const fs::path pointer = checkpoints_dir / "latest";
  if (!fs::is_regular_file(pointer)) return std::nullopt;
  std::string name = read_file(pointer);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r' || name.back() == ' ')) {
    name.pop_back();
  }
  CONCORD_CHECK(!name.empty() && name.find('/') == std::string::npos, pointer.string(),
                ": expected the name of a checkpoint folder, got '", name, "'");
  const fs::path dir = checkpoints_dir / name;
  CONCORD_CHECK(fs::is_directory(dir), pointer.string(), ": names '", name,
                "', which is not a folder");
  return dir;
}

TrainingState load_checkpoint(const fs::path& checkpoint, lm::CausalLM model, AdamW& optimizer) {
  const fs::path state_path = checkpoint / kStateFile;
  CONCORD_CHECK(fs::is_regular_file(state_path), checkpoint.string(),
                ": not a checkpoint folder (no ", kStateFile, ")");
  const io::SafetensorsFile file(state_path);
  const auto& meta = file.metadata();
  const std::string source = state_path.string();
  auto field = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) fail_format(source, "metadata key '", key, "' is missing");
    return it->second;
  };
  if (field("concord.magic") != kTrainingStateMagic) {
    fail_format(source, "not a Concord training state (concord.magic is '", field("concord.magic"), "')");
  }
  int version = 0;
  try {
    version = std::stoi(field("concord.version"));
  } catch (const std::exception&) {
    fail_format(source, "concord.version '", field("concord.version"), "' is not a number");
  }
  if (version < 1 || version > kTrainingStateVersion) {
    fail_format(source, "training-state version ", version, " is not supported (this build reads 1..",
                kTrainingStateVersion, ")");
  }
  nlohmann::json meta_json;
  try {
    meta_json = nlohmann::json::parse(field("concord.state"));
  } catch (const nlohmann::json::exception& e) {
    fail_format(source, "concord.state is not valid JSON: ", e.what());
  }
  if (!meta_json.is_object() || !meta_json.contains("step") || !meta_json["step"].is_number_integer()) {
    fail_format(source, "concord.state must be an object with an integer 'step'");
  }

  // Weights: the same loader as any Hugging Face folder, into the caller's model.
  lm::load_hf_state_dict(model, io::load_safetensors(checkpoint / "model.safetensors"),
                         (checkpoint / "model.safetensors").string());

  std::map<std::string, at::Tensor> tensors;
  for (const auto& key : file.keys()) tensors[key] = file.get(key).clone();
  auto rng = tensors.find(kRngKey);
  if (rng == tensors.end()) fail_format(source, "tensor '", kRngKey, "' is missing");
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng->second);
  }
  tensors.erase(rng);
  optimizer.load_state_dict(tensors, source);

  TrainingState state;
  state.step = meta_json["step"].get<int64_t>();
  state.data = meta_json.value("data", nlohmann::json());
  state.extra = meta_json.value("extra", nlohmann::json());
  return state;
}

}  // namespace concord::train
