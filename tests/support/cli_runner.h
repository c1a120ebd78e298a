// Running the built `concord` binary from a test: to the end (run_cli), or in the background to
// signal it mid-run (CliProcess). Tests that use it depend on the concord_cli target.
#pragma once
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace concord::testing {

struct CliResult {
  int status;          ///< exit status; 128 + N when killed by signal N
  std::string output;  ///< stdout and stderr together
};

/// `concord ARGS` (a shell word list), to the end.
CliResult run_cli(const std::string& args);
/// The same with environment assignments ("A=1 B=2") for the one command.
CliResult run_cli_env(const std::string& env, const std::string& args);

/// `concord` started in the background with `args` and extra environment `env` ("NAME=value"
/// entries), its output in `log`.
class CliProcess {
 public:
  CliProcess(const std::vector<std::string>& args, const std::vector<std::string>& env,
             const std::filesystem::path& log);
  ~CliProcess();  ///< kills the process if it is still running
  CliProcess(const CliProcess&) = delete;
  CliProcess& operator=(const CliProcess&) = delete;

  pid_t pid() const { return pid_; }
  void signal(int signal) const;
  /// Whether it has exited (reaps it; exit_status() is then valid).
  bool finished();
  /// Waits for the end and returns exit_status().
  int wait();
  int exit_status() const { return status_; }

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

}  // namespace concord::testing
