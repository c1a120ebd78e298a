#include "concord/tasks/quickstart.h"

#include <chrono>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "concord/core/error.h"
#include "concord/core/progress.h"
#include <ATen/Parallel.h>
#include "grape_experiment_run.h"
#include "stage_data.h"
#include "stage_pretrain.h"
#include "stage_tumlu.h"
#include "task_koala.h"
#include "task_maxmin.h"

namespace concord::tasks {

const char* quickstart_size_name(QuickstartSize size) {
  switch (size) {
    case QuickstartSize::smoke: return "smoke";
    case QuickstartSize::quick: return "quick";
    case QuickstartSize::full: return "full";
  }
  return "full";
}

std::vector<Stage> quickstart_stages(const std::filesystem::path& out, QuickstartSize size) {
  std::vector<Stage> stages;
  stages.push_back(data_stage());
  stages.push_back(pretrain_stage(size));
  stages.push_back(tumlu_stage(out / kQuickstartModel, size));
  stages.push_back(grape_stage(size));
  stages.push_back(maxmin_stage(size));
  stages.push_back(koala_stage(size));
  return stages;
}

namespace {

QuickstartResult run_quickstart_impl(const std::filesystem::path& out, QuickstartSize size) {
  std::filesystem::create_directories(out);
  const auto stages = quickstart_stages(out, size);
  const auto begin = std::chrono::steady_clock::now();
  std::vector<std::vector<std::string>> rows;
  std::string lines;
  size_t index = 0;
  for (const auto& stage : stages) {
    ++index;
    if (!stage.unavailable.empty()) {
      spdlog::info("quickstart [{}/{}] {}: not yet available ({})", index, stages.size(), stage.name,
                   stage.unavailable);
      rows.push_back({stage.name, stage.what, "", "not yet available: " + stage.unavailable});
      lines += fmt::format("  {:<9} not yet available: {}\n", stage.name, stage.unavailable);
      continue;
    }
    if (!stage.skipped.empty()) {
      const std::string why = fmt::format("skipped at {} size: {}", quickstart_size_name(size), stage.skipped);
      spdlog::info("quickstart [{}/{}] {}: {}", index, stages.size(), stage.name, why);
      rows.push_back({stage.name, stage.what, stage.shows, why});
      lines += fmt::format("  {:<9} {}\n\n", stage.name, why);
      continue;
    }
    spdlog::info("quickstart [{}/{}] {}: {}", index, stages.size(), stage.name, stage.what);
    const auto start = std::chrono::steady_clock::now();
    RunDirectory dir(out / stage.name);
    const std::string summary = stage.run(dir);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("quickstart [{}/{}] {} done in {}: {}", index, stages.size(), stage.name, human_duration_ms(1000 * s), summary);
    rows.push_back({"[" + stage.name + "](" + stage.name + "/report.md)", stage.what, stage.shows,
                    summary + " (" + human_duration_ms(1000 * s) + ")"});
    lines += fmt::format("  {:<9} {}\n  {:<9} shows: {}\n  {:<9} result: {}\n  {:<9} report: {}\n\n",
                         stage.name, stage.what, "", stage.shows, "", summary, "",
                         (out / stage.name / "report.md").string());
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  const std::string head = fmt::format(
      "Concord quickstart ({} size): {} stages in {} on {} thread(s), all on built-in data.",
      quickstart_size_name(size), stages.size(), human_duration_ms(1000 * total), at::get_num_threads());
  Report top("Concord quickstart");
  top.paragraph(head + " Each stage ran in its own folder (its config.json, metrics.jsonl, "
                "report.md and charts/); a stage that needs a part of Concord not in this build "
                "is listed as such. Every figure stands beside its baseline or chance level; "
                "intervals are 95% (Student's t over seeds, Welch's for a difference, Wilson's "
                "over items).");
  if (size == QuickstartSize::smoke) {
    top.paragraph("**Smoke size:** every stage ran at a toy size that checks the pipeline runs; "
                  "its figures mean nothing. `concord quickstart` (or `--quick`) gives results.");
  }
  top.heading("Stages").table({"stage", "what it runs", "what it shows", "result"}, rows);
  QuickstartResult result;
  result.report = out / "report.md";
  top.write(result.report);
  result.summary = head + "\n\n" + lines + "All stages, linked: " + result.report.string() + "\n";
  return result;
}

}  // namespace

QuickstartResult run_quickstart(const std::filesystem::path& out, QuickstartSize size) {
  return translate_torch_errors("run_quickstart", [&] { return run_quickstart_impl(out, size); });
}

}  // namespace concord::tasks
