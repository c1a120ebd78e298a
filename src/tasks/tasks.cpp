#include "concord/tasks/tasks.h"

#include <stdlib.h>  // mkdtemp

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/core/shard.h"
#include "grape_experiment_run.h"
#include "task_ablation.h"
#include "task_diversity.h"
#include "task_grape.h"
#include "task_koala.h"
#include "task_sdxl.h"
#include "task_maxmin.h"
#include "task_policy.h"
#include "task_reward.h"
#include "task_tokenize.h"
#include "task_train.h"
#include "task_tumlu.h"

namespace concord::tasks {

namespace {

Task planned(const std::string& summary, const std::string& missing) {
  return Task{summary, nullptr, nullptr, missing};
}

Registry<Task> build_registry() {
  Registry<Task> r("task");
  r.add("tokenize", tokenize_task());
  r.add("pretrain", pretrain_task());
  r.add("sft", sft_task());
  r.add("reward", reward_task());
  r.add("reward_em", reward_em_task());
  r.add("ppo", ppo_task());
  r.add("dpo", dpo_task());
  r.add("maxmin_experiment", maxmin_experiment_task());
  r.add("grape", grape_task());
  r.add("grape_experiment", grape_experiment_task());
  r.add("tumlu", tumlu_task());
  r.add("diversity", diversity_task());
  r.add("pangu_ablation", pangu_ablation_task());
  r.add("koala_kd", koala_kd_task());
  r.add("koala_experiment", koala_experiment_task());
  r.add("generate_images", generate_images_task());
  r.add("prepare_latents", prepare_latents_task());
  r.add("pipeline", planned("several tasks in order", "needs the tasks it would chain"));
  return r;
}

}  // namespace

const Registry<Task>& task_registry() {
  static const Registry<Task> registry = build_registry();
  return registry;
}

ConfigSchema common_run_schema() {
  ConfigSchema s("run");
  s.required("task", ConfigType::String, "the task to run: " + task_registry().joined_names())
      .optional("out_dir", ConfigType::String, "", "run folder (default runs/<task>-<time>)")
      .optional("seed", ConfigType::Int, 1234, "seed for LibTorch and std generators");
  return s;
}

namespace {

// A fresh folder under the system's temporary folder, removed with everything in it.
class ScratchFolder {
 public:
  explicit ScratchFolder(const std::string& prefix) {
    std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    CONCORD_CHECK(::mkdtemp(pattern.data()) != nullptr, "cannot create a scratch folder ",
                  pattern, ": ", std::strerror(errno));
    path_ = pattern;
  }
  ~ScratchFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchFolder(const ScratchFolder&) = delete;
  ScratchFolder& operator=(const ScratchFolder&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string run_task_impl(Json raw, const std::string& source,
                          const std::vector<std::string>& overrides, const std::string& out_dir,
                          bool resume) {
  if (!raw.is_object()) fail_config(source, "expected a JSON object at the top level");
  // Overrides may change the task itself, so look at them first.
  std::string task_name;
  for (const auto& o : overrides) {
    if (o.rfind("task=", 0) == 0) task_name = o.substr(5);
  }
  if (task_name.empty()) {
    auto it = raw.find("task");
    if (it == raw.end() || !it->is_string()) {
      fail_config(source, "missing required key 'task' (one of: ",
                  task_registry().joined_names(), ")");
    }
    task_name = it->get<std::string>();
  }
  const Task& task = task_registry().get(task_name);
  if (!task.unavailable.empty()) {
    fail_unsupported("task '", task_name, "' is not available in this build yet: ",
                     task.unavailable);
  }
  ConfigSchema schema = common_run_schema();
  schema.extend(task.schema());
  for (const auto& o : overrides) apply_override(raw, o, schema);
  Json config = schema.resolve(raw, source);

  std::string dir = !out_dir.empty() ? out_dir : config["out_dir"].get<std::string>();
  if (dir.empty()) {
    const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char stamp[32];
    std::strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", std::localtime(&now));
    dir = "runs/" + task_name + "-" + stamp;
  }
  config["out_dir"] = dir;
  seed_everything(config["seed"].get<uint64_t>());

  const Shard shard = process_shard();
  if (shard.world_size > 1 && shard.rank != 0 && !task.writes_rank_parts) {
    // Only rank 0 writes the run folder; this rank's files (its copy of the model, report and
    // metrics, identical to rank 0's) go to a scratch folder that is removed at the end.
    ScratchFolder scratch("concord-rank" + std::to_string(shard.rank));
    // It reads the run's checkpoints where rank 0 keeps them, so `--resume` finds the same one
    // on every rank (a task with a loop of its own, PPO's, restores by itself).
    std::filesystem::create_directory_symlink(std::filesystem::absolute(dir) / "checkpoints",
                                              scratch.path() / "checkpoints");
    RunDirectory run_dir(scratch.path(), resume);
    Report report("concord run: " + task_name);
    task.run(config, run_dir, report);
    return dir;
  }
  RunDirectory run_dir(dir, resume);
  run_dir.write_config(config);
  Report report("concord run: " + task_name);
  report.paragraph(task.summary + ". Resolved config: [config.json](config.json).");
  task.run(config, run_dir, report);
  report.write(run_dir.file("report.md"));
  return dir;
}

bool looks_like_json_text(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r\n");
  return first != std::string::npos && s[first] == '{';
}

}  // namespace

std::string run_task_json(Json config, const std::string& source,
                          const std::vector<std::string>& overrides, const std::string& out_dir,
                          bool resume) {
  return translate_torch_errors("run_task " + source, [&] {
    return run_task_impl(std::move(config), source, overrides, out_dir, resume);
  });
}

std::string run_task(const std::string& config_json_or_path,
                     const std::vector<std::string>& overrides, const std::string& out_dir,
                     bool resume) {
  if (looks_like_json_text(config_json_or_path)) {
    return run_task_json(parse_json(config_json_or_path, "run config"), "run config", overrides,
                         out_dir, resume);
  }
  return run_task_json(load_json_file(config_json_or_path), config_json_or_path, overrides,
                       out_dir, resume);
}

}  // namespace concord::tasks
