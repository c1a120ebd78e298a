#include "concord/tasks/quickstart.h"

#include <chrono>
#include <spdlog/spdlog.h>

#include "concord/core/error.h"
#include "grape_experiment_run.h"
#include "stage_data.h"
#include "stage_pretrain.h"
#include "stage_tumlu.h"
#include "task_koala.h"
#include "task_maxmin.h"

namespace concord::tasks {

std::vector<Stage> quickstart_stages(const std::filesystem::path& out, bool quick) {
  std::vector<Stage> stages;
  stages.push_back(data_stage());
  stages.push_back(pretrain_stage(quick));
  stages.push_back(tumlu_stage(out / kQuickstartModel, quick));
  stages.push_back(grape_stage(quick));
  stages.push_back(maxmin_stage(quick));
  stages.push_back(koala_stage(quick));
  return stages;
}

namespace {

std::filesystem::path run_quickstart_impl(const std::filesystem::path& out, bool quick) {
  std::filesystem::create_directories(out);
  Report top("Concord quickstart");
  top.paragraph("Each stage runs on built-in data in its own folder; stages that need a part of "
                "Concord not built yet are listed as such.");
  std::vector<std::vector<std::string>> rows;
  for (auto& stage : quickstart_stages(out, quick)) {
    if (!stage.unavailable.empty()) {
      spdlog::info("quickstart: stage {}: not yet available ({})", stage.name, stage.unavailable);
      rows.push_back({stage.name, stage.what, "not yet available: " + stage.unavailable});
      continue;
    }
    spdlog::info("quickstart: stage {}: {}", stage.name, stage.what);
    const auto start = std::chrono::steady_clock::now();
    RunDirectory dir(out / stage.name);
    std::string summary = stage.run(dir);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("quickstart: stage {} done in {:.1f} s: {}", stage.name, s, summary);
    rows.push_back({"[" + stage.name + "](" + stage.name + "/report.md)", stage.what,
                    summary + fmt::format(" ({:.1f} s)", s)});
  }
  top.heading("Stages").table({"stage", "what it does", "result"}, rows);
  const auto path = out / "report.md";
  top.write(path);
  return path;
}

}  // namespace

std::filesystem::path run_quickstart(const std::filesystem::path& out, bool quick) {
  return translate_torch_errors("run_quickstart", [&] { return run_quickstart_impl(out, quick); });
}

}  // namespace concord::tasks
