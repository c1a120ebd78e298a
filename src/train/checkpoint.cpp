#include "concord/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <set>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/safetensors.h"

namespace concord::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStateFile = "training_state.safetensors";
constexpr const char* kModulesDir = "modules";
constexpr const char* kRngKey = "__rng.cpu";

// A module's parameters and buffers under their named_parameters()/named_buffers() names.
std::map<std::string, at::Tensor> module_tensors(const torch::nn::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& item : module.named_parameters()) out[item.key()] = item.value();
  for (const auto& item : module.named_buffers()) out[item.key()] = item.value();
  return out;
}

void check_module_names(const std::vector<NamedModule>& modules) {
  std::set<std::string> seen;
  for (const auto& [name, module] : modules) {
    CONCORD_CHECK(module != nullptr, "checkpoint: module '", name, "' is null");
    CONCORD_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." &&
                      name != "..",
                  "checkpoint: module name '", name, "' must be a non-empty file name");
    CONCORD_CHECK(seen.insert(name).second, "checkpoint: module name '", name, "' given twice");
  }
}

// Copies the tensors of `path` into `module`: the same names, the same shapes, nothing missing
// and nothing left over.
void load_module(const fs::path& path, torch::nn::Module& module) {
  const std::string source = path.string();
  CONCORD_CHECK(fs::is_regular_file(path), source, ": missing (the checkpoint has no such module)");
  const io::SafetensorsFile file(path);
  auto targets = module_tensors(module);
  for (const auto& key : file.keys()) {
    if (!targets.count(key)) fail_format(source, "tensor '", key, "' matches nothing in the module");
  }
  at::NoGradGuard no_grad;
  for (auto& [key, target] : targets) {
    if (!file.contains(key)) fail_format(source, "tensor '", key, "' is missing");
    const at::Tensor saved = file.get(key);
    if (saved.sizes() != target.sizes()) {
      fail_format(source, "tensor '", key, "' has shape ", saved.sizes(), ", the module ",
                  target.sizes());
    }
    target.copy_(saved);
  }
}

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

fs::path save_checkpoint(const fs::path& checkpoints_dir, const std::vector<NamedModule>& modules,
                         const AdamW& optimizer, const TrainingState& state, int64_t keep) {
  check_module_names(modules);
  fs::create_directories(checkpoints_dir);
  const std::string name = step_folder_name(state.step);
  const fs::path final_dir = checkpoints_dir / name;
  const fs::path tmp_dir = checkpoints_dir / (name + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp_dir);
  fs::create_directories(tmp_dir);

  nlohmann::json module_names = nlohmann::json::array();
  fs::create_directories(tmp_dir / kModulesDir);
  for (const auto& [name, module] : modules) {
    io::save_safetensors(tmp_dir / kModulesDir / (name + ".safetensors"), module_tensors(*module),
                         {{"concord.module", name}});
    module_names.push_back(name);
  }
  std::map<std::string, at::Tensor> tensors = optimizer.state_dict();
  {
    // The default generator is shared process-wide; read its state under its own lock.
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    tensors[kRngKey] = gen.get_state();
  }
  const nlohmann::json meta = {{"step", state.step},
                               {"data", state.data},
                               {"modules", module_names},
                               {"extra", state.extra}};
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

TrainingState load_checkpoint(const fs::path& checkpoint, const std::vector<NamedModule>& modules,
                              AdamW& optimizer) {
  check_module_names(modules);
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
  if (version != kTrainingStateVersion) {
    fail_format(source, "training-state version ", version, " is not supported (this build reads ",
                kTrainingStateVersion, version == 1 ? "; version 1 held a single causal LM as a "
                "Hugging Face folder: load its config.json + model.safetensors as a model instead)"
                : ")");
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

  // The saved modules must be exactly the ones given: a module left out would silently keep
  // its fresh weights.
  std::set<std::string> saved, given;
  if (meta_json.contains("modules") && meta_json["modules"].is_array()) {
    for (const auto& m : meta_json["modules"]) {
      if (!m.is_string()) fail_format(source, "concord.state.modules must hold strings");
      saved.insert(m.get<std::string>());
    }
  } else {
    fail_format(source, "concord.state has no 'modules' list");
  }
  for (const auto& [name, module] : modules) given.insert(name);
  if (saved != given) {
    auto join = [](const std::set<std::string>& names) {
      std::string out;
      for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
      return out;
    };
    fail_format(source, "the checkpoint holds modules [", join(saved), "], the run has [",
                join(given), "]");
  }
  for (const auto& [name, module] : modules) {
    load_module(checkpoint / kModulesDir / (name + ".safetensors"), *module);
  }

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
