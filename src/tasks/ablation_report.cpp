#include "ablation_report.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "concord/core/files.h"
#include "concord/core/plot.h"
#include "concord/core/statistics.h"
#include "concord/lm/diversity.h"

namespace concord::tasks {

void report_ablation(const std::vector<train::VariantResult>& results, RunDirectory& dir,
                     Report& report) {
  nlohmann::json all = nlohmann::json::array();
  for (const auto& r : results) all.push_back(r.to_json());
  write_file_atomic(dir.file("results.json"), all.dump(2) + "\n");

  std::vector<std::vector<std::string>> rows, latency_rows;
  std::vector<std::string> labels;
  std::vector<double> means, stds;
  for (const auto& r : results) {
    const auto& loss = r.eval_loss;
    const MeanDifference d = difference_of_means(loss, results.front().eval_loss);
    rows.push_back({r.name, std::to_string(r.parameters), std::to_string(r.intermediate_size),
                    fixed(loss.mean, 4) + " ± " + fixed(loss.stddev, 4),
                    loss.has_interval ? fixed(loss.ci_low, 4) + " - " + fixed(loss.ci_high, 4) : "one seed",
                    &r == &results.front() ? "" : describe_difference(r.name, results.front().name, d, 4) +
                                                     paired_by_seed_clause(loss, results.front().eval_loss, 4),
                    std::to_string(loss.values.size())});
    const auto [lo, hi] = std::minmax_element(r.latency_round_ratios.begin(), r.latency_round_ratios.end());
    std::string per_round;
    for (double x : r.latency_round_ratios) per_round += (per_round.empty() ? "" : ", ") + fixed(x, 3);
    const double flop_ratio = r.forward_gflops / results.front().forward_gflops;
    latency_rows.push_back({r.name, fixed(r.latency_ms, 2), fixed(r.latency_ratio, 3),
                            r.latency_round_ratios.empty() ? "" : fixed(*lo, 3) + " - " + fixed(*hi, 3),
                            per_round, fixed(r.forward_gflops, 3), fixed(flop_ratio, 3)});
    labels.push_back(r.name);
    means.push_back(r.eval_loss.mean);
    stds.push_back(r.eval_loss.has_interval ? r.eval_loss.ci_high - r.eval_loss.mean : 0.0);
    dir.metrics().log_json({{"step", 0},
                            {"variant", r.name},
                            {"eval/loss_mean", r.eval_loss.mean},
                            {"eval/loss_std", r.eval_loss.stddev},
                            {"latency/ratio", r.latency_ratio}});
  }
  report.heading("Validation loss and size")
      .paragraph("Mean ± sample sd over the seeds, the 95% Student-t interval of the mean, and each "
                 "variant's difference from " + results.front().name + " with Welch's 95% interval "
                 "(seeds as independent samples) and paired by seed (a seed fixes the data order "
                 "for every variant): a difference is significant when its interval excludes 0.")
      .table({"variant", "parameters", "FFN width", "validation loss (mean ± sd)", "95% interval",
              "difference", "seeds"},
             rows);
  const auto& first = results.front();
  report.heading("Forward latency")
      .paragraph("Each variant's first-seed model, timed after all training in one process on a "
                 "fresh copy of its weights: " + std::to_string(first.latency_round_ms.size()) +
                 " rounds, the variants' order alternating each round, each round the median of "
                 "the timed forwards after 3 warm-ups; " + std::to_string(first.latency_threads) +
                 " intra-op thread(s). The figure is the median over rounds; the range is the "
                 "rounds' spread. GFLOPs are estimated from the config (train::forward_flops): "
                 "the variants have equal parameter counts, so their matrix work is nearly equal "
                 "and a plausible latency ratio sits near the FLOP ratio.")
      .table({"variant", "forward ms", "vs " + first.name, "range over rounds", "per round",
              "GFLOPs", "FLOPs vs " + first.name},
             latency_rows);
  plot_bars(dir.chart("validation_loss.png"),
            {"validation loss (mean, 95% interval over seeds)", "", "mean token loss (nats)"}, labels,
            means, stds);
  report.image("validation loss", "charts/validation_loss.png");

  // Loss curves: the mean over seeds at each step.
  std::vector<Series> curves;
  for (const auto& r : results) {
    std::map<int64_t, std::pair<double, int>> by_step;
    for (const auto& curve : r.train_loss) {
      for (const auto& [s, l] : curve) {
        by_step[s].first += l;
        by_step[s].second += 1;
      }
    }
    Series s;
    s.label = r.name;
    for (const auto& [step, acc] : by_step) {
      s.x.push_back(static_cast<double>(step));
      s.y.push_back(acc.first / acc.second);
    }
    curves.push_back(std::move(s));
  }
  ChartSpec loss_spec;
  loss_spec.title = "training loss (mean over seeds)";
  loss_spec.y_label = "mean token loss (nats)";
  plot_lines(dir.chart("training_loss.png"), loss_spec, curves);
  report.image("training loss", "charts/training_loss.png");

  // Diversity per layer.
  std::vector<Series> diversity;
  std::vector<std::string> header = {"layer"};
  for (const auto& r : results) header.push_back(r.name);
  std::vector<std::vector<std::string>> drows;
  const size_t layers = results.front().relative_diversity.size();
  for (size_t l = 0; l < layers; ++l) {
    std::vector<std::string> row = {lm::LayerDiversity::layer_name(l)};
    for (const auto& r : results) {
      row.push_back(l < r.relative_diversity.size() ? fixed(r.relative_diversity[l], 4) : "");
    }
    drows.push_back(std::move(row));
  }
  for (const auto& r : results) {
    Series s;
    s.label = r.name;
    for (size_t l = 0; l < r.relative_diversity.size(); ++l) {
      s.x.push_back(static_cast<double>(l));
      s.y.push_back(r.relative_diversity[l]);
    }
    diversity.push_back(std::move(s));
  }
  ChartSpec div_spec;
  div_spec.title = "feature diversity d_M(H) / ||H||_F per layer";
  div_spec.x_label = "layer (0 = embedding)";
  div_spec.y_label = "relative distance to the rank-one subspace";
  plot_lines(dir.chart("diversity.png"), div_spec, diversity);
  report.heading("Feature diversity per layer (PanGu-π Sec. 3)")
      .paragraph("d_M(H) / ||H||_F on validation blocks, mean over seeds: 0 is total collapse "
                 "(every token has the same feature), 1 a zero-mean set of token features.")
      .table(header, drows)
      .image("diversity", "charts/diversity.png");
}

}  // namespace concord::tasks
