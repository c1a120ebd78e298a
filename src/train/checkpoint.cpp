#include "concord/train/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <mutex>
#include <set>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/sync_folder.h"
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

// Opens `path` and checks it against `module`: the same names, the same shapes, nothing missing
// and nothing left over. Nothing is copied yet (copy_module_tensors), so a checkpoint that fails
// any check leaves every module as it was.
std::unique_ptr<io::SafetensorsFile> checked_module_file(const fs::path& path,
                                                         torch::nn::Module& module) {
  const std::string source = path.string();
  CONCORD_CHECK(fs::is_regular_file(path), source, ": missing (the checkpoint has no such module)");
  auto file = std::make_unique<io::SafetensorsFile>(path);
  const auto targets = module_tensors(module);
  for (const auto& key : file->keys()) {
    if (!targets.count(key)) fail_format(source, "tensor '", key, "' matches nothing in the module");
  }
  for (const auto& [key, target] : targets) {
    if (!file->contains(key)) fail_format(source, "tensor '", key, "' is missing");
    // sizes() is a view into the tensor: keep the tensor alive while it is read.
    const at::Tensor saved = file->get(key);
    if (saved.sizes() != target.sizes()) {
      fail_format(source, "tensor '", key, "' has shape ", saved.sizes(), ", the module ",
                  target.sizes());
    }
  }
  return file;
}

void copy_module_tensors(const io::SafetensorsFile& file, torch::nn::Module& module) {
  at::NoGradGuard no_grad;
  for (auto& [key, target] : module_tensors(module)) target.copy_(file.get(key));
}

// The saved CPU generator state, checked on a generator of its own first: LibTorch refuses a bad
// one with an error that names no file.
void check_rng_state(const at::Tensor& state, const std::string& source) {
  if (state.scalar_type() != at::kByte || state.dim() != 1) {
    fail_format(source, "tensor '", kRngKey, "' must be a 1-D uint8 generator state, got ",
                state.scalar_type(), " of shape ", state.sizes());
  }
  try {
    at::Generator trial = at::detail::createCPUGenerator();
    trial.set_state(state);
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    what = what.substr(0, what.find('\n'));
    fail_format(source, "tensor '", kRngKey, "' is not a CPU generator state: ", what);
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

// Removes step-*.tmp-<pid> folders that a crashed save left behind (their process is gone):
// they are never taken for checkpoints, but would hold a checkpoint's worth of disk each.
void remove_stale_temporaries(const fs::path& dir) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const size_t tmp = name.find(".tmp-");
    if (name.rfind("step-", 0) != 0 || tmp == std::string::npos) continue;
    long pid = 0;
    try {
      pid = std::stol(name.substr(tmp + 5));
    } catch (const std::exception&) {
      continue;
    }
    if (pid > 0 && pid != static_cast<long>(::getpid()) &&
        ::kill(static_cast<pid_t>(pid), 0) == 0) {
      continue;  // another live process is writing it (two runs sharing a folder: their problem)
    }
    std::error_code rm;
    fs::remove_all(it->path(), rm);
  }
}

// Renames the complete `from` onto `to`. A checkpoint of the same step already there (a resumed
// run saving that step again) is swapped out atomically (renameat2 RENAME_EXCHANGE), so `latest`
// never names a missing folder; where the filesystem cannot swap, it is removed first.
void move_into_place(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (fs::exists(to, ec)) {
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) == 0) {
      fs::remove_all(from, ec);  // now the old checkpoint
      return;
    }
    fs::remove_all(to, ec);
    if (ec) fail_io(to.string(), "cannot replace the checkpoint of the same step: ", ec.message());
  }
  fs::rename(from, to, ec);
  if (ec) fail_io(to.string(), "cannot rename ", from.filename().string(), " into place: ", ec.message());
}

}  // namespace

fs::path save_checkpoint(const fs::path& checkpoints_dir, const std::vector<NamedModule>& modules,
                         const AdamW& optimizer, const TrainingState& state, int64_t keep,
                         const std::vector<std::pair<std::string, fs::path>>& extra_files) {
  check_module_names(modules);
  const std::string name = step_folder_name(state.step);
  const fs::path final_dir = checkpoints_dir / name;
  const fs::path tmp_dir = checkpoints_dir / (name + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::create_directories(checkpoints_dir, ec);
  if (ec) fail_io(checkpoints_dir.string(), "cannot create the checkpoint folder: ", ec.message());
  remove_stale_temporaries(checkpoints_dir);

  try {
    fs::remove_all(tmp_dir, ec);
    fs::create_directories(tmp_dir / kModulesDir, ec);
    if (ec) fail_io(tmp_dir.string(), "cannot create a folder: ", ec.message());
    nlohmann::json module_names = nlohmann::json::array();
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
    // Files written by others for this checkpoint (ZeRO-1 optimiser shards) move in before it
    // exists, so it is complete or absent.
    for (const auto& [relative, source] : extra_files) {
      const fs::path target = path_inside(tmp_dir, relative, "checkpoint file");
      fs::create_directories(target.parent_path(), ec);
      fs::rename(source, target, ec);
      if (ec) fail_io(source.string(), "cannot move into the checkpoint: ", ec.message());
      sync_folder(target.parent_path());
    }
    // Each file was fsynced and its folder too (write_file_atomic); the modules/ entry is in
    // tmp_dir, which training_state's write synced. Now the folder becomes the checkpoint.
    move_into_place(tmp_dir, final_dir);
    sync_folder(checkpoints_dir);
    write_file_atomic(checkpoints_dir / "latest", name + "\n");
  } catch (const IoError& e) {
    // A full disk or an unwritable folder: say so once, with what is still there to resume from.
    fs::remove_all(tmp_dir, ec);
    std::string kept = "no earlier checkpoint";
    try {
      if (auto previous = latest_checkpoint(checkpoints_dir)) {
        kept = "the latest is still " + previous->filename().string();
      }
    } catch (const std::exception&) {
    }
    fail_io(final_dir.string(), "checkpoint not written (", kept, "): ", e.what());
  } catch (...) {
    fs::remove_all(tmp_dir, ec);
    throw;
  }

  if (keep > 0) {
    auto folders = step_folders(checkpoints_dir);
    const int64_t extra = static_cast<int64_t>(folders.size()) - keep;
    for (int64_t i = 0; i < extra; ++i) {
      // A folder that cannot be removed costs disk, not the run: the next save tries again.
      if (folders[static_cast<size_t>(i)] != final_dir) fs::remove_all(folders[static_cast<size_t>(i)], ec);
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
  CONCORD_CHECK(!name.empty() && name.find('/') == std::string::npos && name != "." && name != "..",
                pointer.string(),
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
  // Everything is checked before anything is changed: a checkpoint refused half-way would
  // otherwise leave some modules loaded and the optimiser fresh.
  std::vector<std::unique_ptr<io::SafetensorsFile>> module_files;
  for (const auto& [name, module] : modules) {
    module_files.push_back(
        checked_module_file(checkpoint / kModulesDir / (name + ".safetensors"), *module));
  }
  std::map<std::string, at::Tensor> tensors;
  for (const auto& key : file.keys()) tensors[key] = file.get(key).clone();
  auto rng = tensors.find(kRngKey);
  if (rng == tensors.end()) fail_format(source, "tensor '", kRngKey, "' is missing");
  const at::Tensor rng_state = rng->second;
  check_rng_state(rng_state, source);
  tensors.erase(rng);
  AdamW loaded = optimizer;  // its slots share the parameters; only its own state changes
  loaded.load_state_dict(tensors, source);

  for (size_t i = 0; i < modules.size(); ++i) {
    copy_module_tensors(*module_files[i], *modules[i].second);
  }
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(rng_state);
  }
  optimizer = std::move(loaded);

  TrainingState state;
  state.step = meta_json["step"].get<int64_t>();
  state.data = meta_json.value("data", nlohmann::json());
  state.extra = meta_json.value("extra", nlohmann::json());
  return state;
}

}  // namespace concord::train
