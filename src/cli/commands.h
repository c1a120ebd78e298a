// The subcommands of `concord`, one function each (src/cli/cmd_*.cpp).
#pragma once
#include <string>
#include <vector>

namespace concord::cli {

struct ParamsArgs {
  std::string model_config;
  bool by_module = false;
};

struct RunArgs {
  std::string run_config;
  std::vector<std::string> overrides;
  std::string out_dir;
  bool resume = false;
};

struct TumluScoreArgs {
  std::string outputs_dir;
  std::string extractor;
  std::string out_dir;        ///< non-empty: also write results.json, report.md and a chart there
  bool all_subjects = false;  ///< language scores over every subject, not the headline subset
};

struct QuickstartArgs {
  std::string out_dir;
  bool quick = false;  ///< 2-4 minutes on 2 cores: each stage at its smallest meaningful size
  bool smoke = false;  ///< seconds: toy sizes that only check the pipeline runs (tests)
};

struct LaunchArgs {
  int nproc = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;     ///< 0: a free port
  int grace_seconds = 30;  ///< after a worker fails: SIGTERM to the others, SIGKILL after this
  std::vector<std::string> command;  ///< the concord arguments each worker runs
};

int cmd_version();
int cmd_launch(const LaunchArgs& args);
int cmd_params(const ParamsArgs& args);
int cmd_run(const RunArgs& args);
int cmd_tumlu_score(const TumluScoreArgs& args);
int cmd_quickstart(const QuickstartArgs& args);

}  // namespace concord::cli
