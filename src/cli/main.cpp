// `concord`: the command-line driver (docs/architecture.md, "Command-line contract"). Each
// subcommand is declared once here with its flags, defaults and help; the work is in the
// library. Every exception becomes one line on stderr and exit status 1; a run stopped by SIGINT
// or SIGTERM at a checkpoint exits 130 or 143.
#include <CLI/CLI.hpp>

#include <iostream>

#include "commands.h"
#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/core/stop_signal.h"
#include "concord/core/version.h"

int main(int argc, char** argv) {
  CLI::App app{"Concord: PanGu-pi, MaxMin-RLHF, GRAPE, TUMLU and KOALA in one C++ framework"};
  app.require_subcommand(1);
  app.set_version_flag("--version", CONCORD_VERSION_STRING);

  auto* version = app.add_subcommand("version", "Print the version and the LibTorch it runs on");

  concord::cli::ParamsArgs params_args;
  auto* params = app.add_subcommand("params", "Count a model's parameters exactly");
  params->add_option("model_config", params_args.model_config, "Model config JSON")->required();
  params->add_flag("--by-module", params_args.by_module, "Break the count down by module");

  concord::cli::RunArgs run_args;
  auto* run = app.add_subcommand("run", "Run the task a run config names");
  run->add_option("run_config", run_args.run_config, "Run config JSON")->required();
  run->add_option("--set", run_args.overrides, "Override a config key: a.b=value (repeatable)");
  run->add_option("--out", run_args.out_dir, "Run directory (default: the config's out_dir)");
  run->add_flag("--resume", run_args.resume, "Continue from the run directory's last checkpoint");

  concord::cli::LaunchArgs launch_args;
  auto* launch = app.add_subcommand(
      "launch", "Run N local processes of a data-parallel job, as torchrun does (-- then the "
                "concord arguments, e.g. -n 2 -- run cfg.json)");
  launch->add_option("-n,--nproc", launch_args.nproc, "Processes")->required();
  launch->add_option("--master-addr", launch_args.master_addr, "Rendezvous address")
      ->default_val("127.0.0.1");
  launch->add_option("--master-port", launch_args.master_port, "Rendezvous port (0: a free one)")
      ->default_val(0);
  launch->add_option("--grace", launch_args.grace_seconds,
                     "Seconds the other ranks get to stop after one fails")
      ->default_val(30);
  launch->add_option("command", launch_args.command, "The concord arguments of each process")
      ->required();

  concord::cli::TumluScoreArgs score_args;
  auto* score = app.add_subcommand("tumlu-score", "Score stored TUMLU generations");
  score->add_option("outputs_dir", score_args.outputs_dir, "Folder in the benchmark's layout")
      ->required();
  score->add_option("--extractor", score_args.extractor, "official or robust")
      ->default_val("official");
  score->add_option("--out", score_args.out_dir, "Also write results.json, report.md and a chart here");
  score->add_flag("--all-subjects", score_args.all_subjects,
                  "Score languages over every subject, not the paper's headline subset");

  concord::cli::QuickstartArgs quick_args;
  auto* quick = app.add_subcommand("quickstart", "The end-to-end pipeline on built-in data");
  quick->add_option("--out", quick_args.out_dir, "Output folder")->default_val("runs/quickstart");
  quick->add_flag("--quick", quick_args.quick,
                  "2-4 minutes on 2 cores: each stage at its smallest meaningful size");
  quick->add_flag("--smoke", quick_args.smoke,
                  "Seconds: every stage at a toy size that only checks the pipeline runs (its "
                  "figures mean nothing)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (*launch) return concord::cli::cmd_launch(launch_args);  // before LibTorch's threads
    concord::install_stop_handlers();
    concord::init_runtime();
    if (*version) return concord::cli::cmd_version();
    if (*params) return concord::cli::cmd_params(params_args);
    if (*run) return concord::cli::cmd_run(run_args);
    if (*score) return concord::cli::cmd_tumlu_score(score_args);
    if (*quick) return concord::cli::cmd_quickstart(quick_args);
  } catch (const concord::Stopped& e) {
    std::cerr << "concord: " << e.what() << "\n";
    return e.exit_status();
  } catch (const std::exception& e) {
    std::cerr << "concord: error: " << concord::one_line_message(e) << "\n";
    return 1;
  }
  return 0;
}
