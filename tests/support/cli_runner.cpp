#include "cli_runner.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

#include "test_support.h"

namespace concord::testing {

namespace {

std::string concord_binary() { return (binary_dir() / "bin" / "concord").string(); }

int decode(int status) {
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

CliResult run_cli_env(const std::string& env, const std::string& args) {
  const std::string cmd =
      (env.empty() ? "" : "env " + env + " ") + concord_binary() + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  return {decode(pclose(pipe)), out};
}

CliResult run_cli(const std::string& args) { return run_cli_env("", args); }

CliProcess::CliProcess(const std::vector<std::string>& args, const std::vector<std::string>& env,
                       const std::filesystem::path& log) {
  const std::string exe = concord_binary();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    for (const auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
}

CliProcess::~CliProcess() {
  if (pid_ > 0 && status_ < 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

void CliProcess::signal(int signal) const {
  if (pid_ > 0 && status_ < 0) ::kill(pid_, signal);
}

bool CliProcess::finished() {
  if (status_ >= 0) return true;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    status_ = decode(status);
    return true;
  }
  return false;
}

int CliProcess::wait() {
  if (status_ >= 0) return status_;
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0) {
  }
  status_ = decode(status);
  return status_;
}

}  // namespace concord::testing
