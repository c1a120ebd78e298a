// A training-loop skeleton on Concord's foundation: a declared config schema, `--set` overrides,
// a run folder with config.json, metrics.jsonl, a progress line, charts and report.md.
//   build/examples/example_run_folder [out_dir] [key=value ...]
// The "model" is a least-squares fit y = w x + b by gradient descent, so the example is about the
// plumbing, not the maths.
// ci: @OUT@ steps=50
// ci-expect: report: .*report[.]md
#include <ATen/ATen.h>

#include <chrono>
#include <iostream>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/progress.h"
#include "concord/core/report.h"
#include "concord/core/runtime.h"

int main(int argc, char** argv) {
  try {
    concord::init_runtime();
    concord::ConfigSchema schema("least-squares demo");
    schema.optional("steps", concord::ConfigType::Int, 200, "gradient steps")
        .optional("lr", concord::ConfigType::Float, 0.1, "learning rate")
        .optional("seed", concord::ConfigType::Int, 0, "seed");

    concord::Json config = concord::Json::object();
    for (int i = 2; i < argc; ++i) concord::apply_override(config, argv[i], schema);
    config = schema.resolve(config, "command line");
    concord::seed_everything(config["seed"].get<uint64_t>());

    concord::RunDirectory run(argc > 1 ? argv[1] : "runs/example_run_folder");
    run.write_config(config);

    at::Tensor x = at::randn({256});
    at::Tensor y = 3.0 * x + 0.5 + 0.1 * at::randn({256});
    double w = 0, b = 0;
    const auto steps = config["steps"].get<int64_t>();
    const double lr = config["lr"].get<double>();
    concord::ProgressLine progress(steps);
    for (int64_t step = 1; step <= steps; ++step) {
      auto start = std::chrono::steady_clock::now();
      at::Tensor err = w * x + b - y;
      const double loss = err.pow(2).mean().item<double>();
      w -= lr * 2 * (err * x).mean().item<double>();
      b -= lr * 2 * err.mean().item<double>();
      run.metrics().log(step, {{"train/loss", loss}, {"train/w", w}});
      concord::ProgressStats s;
      s.step = step;
      s.loss = loss;
      s.lr = lr;
      s.step_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      progress.update(s);
    }
    progress.finish();

    concord::Report report("Least-squares demo");
    report.table({"parameter", "fitted", "true"},
                 {{"w", concord::fixed(w, 3), "3.000"}, {"b", concord::fixed(b, 3), "0.500"}});
    for (auto& [name, png] : run.chart_metrics({"train/loss", "train/w"})) report.image(name, png);
    report.write(run.file("report.md"));
    std::cout << "report: " << run.file("report.md").string() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "example_run_folder: error: " << concord::one_line_message(e) << "\n";
    return 1;
  }
  return 0;
}
