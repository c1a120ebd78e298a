// `concord launch -n N [--master-addr A] [--master-port P] -- <concord arguments>`: N local
// processes of one data-parallel job, with the environment torchrun gives its workers (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so the same job runs
// here, under torchrun, Slurm or a Kubernetes PyTorchJob (docs/distributed.md).
//
// When a worker fails, the others are sent SIGTERM (they checkpoint at the end of their step
// if they can) and SIGKILL after a grace period, and `launch` exits with the failed worker's
// status. SIGINT and SIGTERM sent to `launch` are passed on to every worker.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "concord/core/error.h"

namespace concord::cli {

namespace {

std::vector<pid_t> g_workers;

extern "C" void forward_signal(int signal) {
  for (pid_t pid : g_workers) {
    if (pid > 0) ::kill(pid, signal);
  }
}

// A free TCP port on the loopback interface (the kernel picks it).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  CONCORD_CHECK(fd >= 0, "launch: cannot open a socket: ", std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  CONCORD_CHECK(ok, "launch: cannot find a free port: ", std::strerror(errno));
  return ntohs(addr.sin_port);
}

std::string self_executable() {
  std::vector<char> buf(4096);
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  CONCORD_CHECK(n > 0, "launch: cannot find the concord executable: ", std::strerror(errno));
  return std::string(buf.data(), static_cast<size_t>(n));
}

// 128 + signal for a worker killed by a signal, its exit status otherwise.
int status_code(int status) {
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

}  // namespace

int cmd_launch(const LaunchArgs& args) {
  CONCORD_CHECK(args.nproc >= 1, "launch: -n must be at least 1, got ", args.nproc);
  CONCORD_CHECK(!args.command.empty(), "launch: no concord arguments after --");
  const std::string exe = self_executable();
  const int port = args.master_port > 0 ? args.master_port : free_port();
  // One intra-op thread share per worker unless set (torchrun sets OMP_NUM_THREADS=1).
  std::string threads;
  if (std::getenv("CONCORD_NUM_THREADS") == nullptr && std::getenv("OMP_NUM_THREADS") == nullptr) {
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    threads = std::to_string(std::max<long>(1, static_cast<long>(cores) / args.nproc));
  }

  struct sigaction action {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  g_workers.assign(static_cast<size_t>(args.nproc), -1);
  for (int r = 0; r < args.nproc; ++r) {
    const pid_t pid = ::fork();
    CONCORD_CHECK(pid >= 0, "launch: fork failed: ", std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(args.nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(args.nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", args.master_addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      if (!threads.empty()) ::setenv("CONCORD_NUM_THREADS", threads.c_str(), 1);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(exe.c_str()));
      for (const auto& a : args.command) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(exe.c_str(), argv.data());
      std::cerr << "concord launch: cannot run " << exe << ": " << std::strerror(errno) << "\n";
      ::_exit(127);
    }
    g_workers[static_cast<size_t>(r)] = pid;
  }

  int result = 0;
  int running = args.nproc;
  bool stopping = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (pid == 0) {  // stopping, nobody exited yet
      if (std::chrono::steady_clock::now() > deadline) forward_signal(SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int rank = -1;
    for (size_t r = 0; r < g_workers.size(); ++r) {
      if (g_workers[r] == pid) {
        rank = static_cast<int>(r);
        g_workers[r] = -1;
      }
    }
    if (rank < 0) continue;
    --running;
    const int code = status_code(status);
    if (code != 0 && result == 0) {
      result = code;
      std::cerr << "concord launch: rank " << rank << " exited with status " << code
                << (running > 0 ? "; stopping the other ranks" : "") << "\n";
      if (running > 0) {
        stopping = true;
        forward_signal(SIGTERM);
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(args.grace_seconds);
      }
    }
  }
  return result;
}

}  // namespace concord::cli
