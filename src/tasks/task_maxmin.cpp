#include "task_maxmin.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "concord/core/files.h"
#include "concord/core/plot.h"
#include "concord/core/statistics.h"
#include "concord/rlhf/maxmin_experiment.h"
#include "metric_chart.h"

namespace concord::tasks {

namespace {


// results.json, the per-group table and the charts.
std::string report_results(const Json& results, const rlhf::MaxMinExperimentOptions& o,
                           RunDirectory& dir, Report& report) {
  write_file_atomic(dir.file("results.json"), results.dump(2) + "\n");
  const auto& em = results["em"];
  report.heading("The world")
      .paragraph(std::to_string(o.world.majority_users) + " majority users (they prefer responses "
                 "rich in " + std::to_string(o.world.planted_tokens) + " planted words) and " +
                 std::to_string(o.world.minority_users) + " minority users (they prefer concise "
                 "responses) label " + std::to_string(o.world.pairs_per_user) + " pairs each of the "
                 "reference policy's samples by Bradley-Terry on their group's true reward. " +
                 std::to_string(o.seeds.size()) + " seed(s); every figure is a mean over seeds.");
  report.heading("EM over users")
      .paragraph("Two reward models (" + o.reward_layout + ") learnt by EM from the labels alone (" +
                 o.em.assignment + " E-step, init " + o.em.init + "): purity " +
                 fixed(em["purity"].get<double>(), 3) + ", NMI " + fixed(em["nmi"].get<double>(), 3) +
                 " against the planted groups.");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> labels;
  std::vector<double> minority_win, majority_win, minority_half, majority_half;
  std::vector<double> minority_reward, majority_reward;  // mean true group reward, per objective
  std::vector<std::string> order{"reference"};
  for (const auto& obj : o.objectives) order.push_back(obj);
  for (const auto& name : order) {
    if (!results.contains(name)) continue;
    const auto& r = results[name];
    std::vector<std::string> row{name};
    for (const char* group : {"majority", "minority"}) {
      const auto& stats = r[group]["stats"];
      row.push_back(with_interval(seed_summary_from_json(stats["win_rate"], 100), 1, "%"));
      row.push_back(with_interval(seed_summary_from_json(stats["mean_true_reward"]), 3));
    }
    rows.push_back(row);
    if (name == "reference") continue;
    labels.push_back(name);
    const SeedSummary majority = seed_summary_from_json(r["majority"]["stats"]["win_rate"], 100);
    const SeedSummary minority = seed_summary_from_json(r["minority"]["stats"]["win_rate"], 100);
    majority_win.push_back(majority.mean);
    minority_win.push_back(minority.mean);
    majority_reward.push_back(
        seed_summary_from_json(r["majority"]["stats"]["mean_true_reward"]).mean);
    minority_reward.push_back(
        seed_summary_from_json(r["minority"]["stats"]["mean_true_reward"]).mean);
    majority_half.push_back(majority.has_interval ? majority.ci_high - majority.mean : 0.0);
    minority_half.push_back(minority.has_interval ? minority.ci_high - minority.mean : 0.0);
  }
  report.heading("Policies against the reference")
      .paragraph("Win rate: the share of held-out prompts where the policy's response has a higher "
                 "TRUE group reward than the reference's (ties count half; the reference against "
                 "itself is the 50% line). single: PPO on one reward model of the pooled labels "
                 "(conventional RLHF); min: PPO on the per-sample minimum of the EM reward models; "
                 "argmin_group: PPO on the reward of the group worst off in each iteration "
                 "(MaxMin-RLHF's Algorithm 1). Each cell: the mean over seeds and, from two "
                 "seeds, its 95% Student-t interval [low, high].")
      .table({"policy", "majority win", "majority reward", "minority win", "minority reward"}, rows);
  if (results.contains("single")) {
    std::vector<std::string> verdicts;
    for (const char* group : {"majority", "minority"}) {
      const SeedSummary single = seed_summary_from_json(results["single"][group]["stats"]["win_rate"], 100);
      for (const auto& name : o.objectives) {
        if (name == "single" || !results.contains(name)) continue;
        const SeedSummary other = seed_summary_from_json(results[name][group]["stats"]["win_rate"], 100);
        verdicts.push_back(std::string(group) + " win rate: " +
                           describe_difference(name, "single", difference_of_means(other, single), 1,
                                               " points") +
                           paired_by_seed_clause(other, single, 1, " points"));
      }
    }
    if (!verdicts.empty()) {
      report.paragraph("Each objective against `single` on win rate: the difference of the means "
                       "with Welch's 95% interval, which treats the seeds as independent samples, "
                       "and the mean per-seed difference with its Student-t interval (within a "
                       "seed both policies share the reference, the labels and the held-out "
                       "prompts). A difference is significant when its interval excludes 0.");
      for (const auto& v : verdicts) report.bullet(v);
      }
  }
  if (!labels.empty()) {
    ChartSpec spec;
    spec.x_label = "objective";
    spec.y_label = "win rate vs reference (%)";
    spec.title = "minority win rate (mean, 95% interval)";
    plot_bars(dir.chart("minority_win_rate.png"), spec, labels, minority_win, minority_half);
    spec.title = "majority win rate (mean, 95% interval)";
    plot_bars(dir.chart("majority_win_rate.png"), spec, labels, majority_win, majority_half);
    report.image("minority win rate", "charts/minority_win_rate.png")
        .image("majority win rate", "charts/majority_win_rate.png");
  }
  if (chart_metrics_together(dir, "ppo_scores.png", "PPO score per iteration (all runs in order)",
                             "record", "aggregated score", {"objective/scores"})) {
    report.image("PPO scores", "charts/ppo_scores.png");
  }
  report.paragraph("Every number, per seed: [results.json](results.json); per-iteration PPO "
                   "metrics (with seed and objective): [metrics.jsonl](metrics.jsonl).");
  // Per group: each objective's win rate and mean true reward, beside the reference's reward.
  auto group_summary = [&](const char* group, const std::vector<double>& win,
                           const std::vector<double>& reward) {
    std::string text = std::string(group) + ":";
    for (size_t i = 0; i < labels.size(); ++i) {
      text += " " + labels[i] + " " + fixed(win[i], 1) + "% (reward " + fixed(reward[i], 3) + ")";
    }
    if (results.contains("reference")) {
      const auto& stats = results["reference"][group]["stats"]["mean_true_reward"];
      text += ", reference reward " + fixed(seed_summary_from_json(stats).mean, 3);
    }
    return text;
  };
  std::string summary = fmt::format(
      "over {} seed(s): EM purity {} (1 = the planted groups); win rate against the reference "
      "policy (50% = no better) and mean true group reward, ",
      o.seeds.size(), fixed(em["purity"].get<double>(), 2));
  summary += group_summary("minority", minority_win, minority_reward) + "; " +
             group_summary("majority", majority_win, majority_reward);
  if (results.contains("single") && results.contains("min")) {
    const SeedSummary single = seed_summary_from_json(results["single"]["minority"]["stats"]["win_rate"], 100);
    const SeedSummary maxmin = seed_summary_from_json(results["min"]["minority"]["stats"]["win_rate"], 100);
    if (maxmin.values.size() >= 2 && maxmin.seeds == single.seeds) {
      summary += "; minority: " + describe_difference("min", "single", paired_difference(maxmin, single), 1, " points");
    }
  }
  return summary;
}

std::string run_experiment(const rlhf::MaxMinExperimentOptions& o, RunDirectory& dir,
                           Report& report) {
  int64_t record = 0;
  rlhf::MaxMinCallbacks callbacks;
  callbacks.progress = [](uint64_t seed, const std::string& stage, const std::string& detail) {
    spdlog::info("maxmin seed {}: {}: {}", seed, stage, detail);
  };
  callbacks.metrics = [&](const Json& r) {
    Json copy = r;
    copy["iteration"] = r["step"];
    copy["step"] = ++record;
    dir.metrics().log_json(copy);
  };
  const Json results = rlhf::run_maxmin_experiment(o, callbacks);
  return report_results(results, o, dir, report);
}

}  // namespace

Task maxmin_experiment_task() {
  Task t;
  t.summary = "MaxMin-RLHF in miniature: EM over two planted groups, then single-reward, min and "
              "argmin_group PPO, per-group win rates";
  t.schema = [] { return rlhf::maxmin_experiment_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const auto o = rlhf::maxmin_experiment_options_schema().read(config);
    run_experiment(o, dir, report);
  };
  return t;
}

Stage maxmin_stage(QuickstartSize size) {
  Stage s;
  s.name = "maxmin";
  s.what = "MaxMin-RLHF: EM over users of two groups (10:1), then single-reward and MaxMin PPO";
  s.shows = "whether EM finds the planted user groups, and whether MaxMin PPO serves the minority "
            "that single-reward PPO (conventional RLHF) leaves behind";
  s.run = [size](RunDirectory& dir) {
    const bool quick = size == QuickstartSize::smoke;
    rlhf::MaxMinExperimentOptions o;
    o.seeds = size == QuickstartSize::full ? std::vector<int64_t>{1, 2, 3, 4, 5}
              : quick                      ? std::vector<int64_t>{1}
                                           : std::vector<int64_t>{1, 2, 3};
    o.objectives = {"single", "min"};
    if (quick) {
      o.world.majority_users = 10;
      o.world.minority_users = 2;
      o.world.pairs_per_user = 16;
      o.reference_steps = 100;
      o.em.max_iterations = 3;
      o.em.m_step_steps = 40;
      o.single_reward_steps = 120;
      o.ppo_iterations = 25;
      o.eval_prompts = 32;
    }
    dir.write_config(rlhf::maxmin_experiment_options_schema().to_json(o));
    Report report("quickstart: maxmin");
    const std::string summary = run_experiment(o, dir, report);
    report.write(dir.file("report.md"));
    return summary;
  };
  return s;
}

}  // namespace concord::tasks
