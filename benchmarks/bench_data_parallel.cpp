// Data-parallel scaling on this machine: the Trainer's step (forward, backward, the bucketed
// gradient all-reduce over Gloo, AdamW) in W processes of `threads` intra-op threads each,
// against one process of the same threads on the same per-process batch, in the same run.
//
//   bench_data_parallel [--model CONFIG] [--batch 8] [--seq 128] [--steps 8] [--warmup 2]
//                       [--world 2] [--threads 1] [--rounds 3] [--shard-optimizer]
//
// Weak scaling: every process takes `batch` sequences a step, so W processes do W times the
// work of one. Reported per round (1 process, W processes with the buckets sent during
// backward, W processes with the all-reduce after backward, in turn):
//   - efficiency = (tokens/s of the W-process job) / (W x tokens/s of one process); 1.0 is
//     perfect, and on a machine with fewer free cores than W x threads it cannot be reached;
//   - bytes sent per step and rank, measured (the kernel's count of bytes this process wrote
//     to sockets and files, /proc/self/io wchar, over the timed steps, no files written there),
//     against the lower bound of an all-reduce of the gradients, 2 (W - 1) / W x 4 P bytes
//     (each rank must send that much in any all-reduce algorithm; Patarasuk & Yuan 2009).
// Without --model: a GPT-2-shaped model of 4 layers, width 256, byte vocabulary (3.3M
// parameters); configs/models/gpt2.json is the 124M one.
#include <unistd.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "concord/core/runtime.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/train/batch.h"
#include "concord/train/next_token.h"
#include "concord/train/process_group.h"
#include "concord/train/trainer.h"

#include "bench_flags.h"
#include "bench_timing.h"

using concord::bench::median;

namespace {

struct Args {
  std::string model;
  int64_t batch = 8, seq = 128, steps = 8, warmup = 2;
  int world = 2, threads = 1, rounds = 3;
  bool shard_optimizer = false;
  bool overlap = true;  // workers: send buckets during backward
};

// Random token blocks, the same stream in every process (each rank's rows differ by its seed).
class RandomTokens final : public concord::train::BatchSource<concord::train::TokenBatch> {
 public:
  RandomTokens(int64_t vocab, int64_t batch, int64_t seq, uint64_t seed)
      : vocab_(vocab), batch_(batch), seq_(seq), gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}
  concord::train::TokenBatch next() override {
    at::Tensor ids = at::randint(vocab_, {batch_, seq_ + 1}, gen_, at::kLong);
    concord::train::TokenBatch b;
    b.input_ids = ids.narrow(1, 0, seq_).contiguous();
    b.targets = ids.narrow(1, 1, seq_).contiguous();
    return b;
  }
  int64_t batches_per_epoch() const override { return 1 << 20; }
  nlohmann::json state() const override { return nlohmann::json::object(); }
  void load_state(const nlohmann::json&) override {}

 private:
  int64_t vocab_, batch_, seq_;
  at::Generator gen_;
};

int64_t bytes_written() {
  std::ifstream in("/proc/self/io");
  std::string key;
  int64_t value = 0;
  while (in >> key >> value) {
    if (key == "wchar:") return value;
  }
  return 0;
}

concord::lm::ModelConfig model_config(const Args& a) {
  if (!a.model.empty()) return concord::lm::load_any_model_config(a.model);
  nlohmann::json j = {{"family", "gpt2"},   {"vocab_size", 257}, {"max_position_embeddings", 512},
                      {"hidden_size", 256}, {"num_layers", 4},   {"num_heads", 4},
                      {"eos_token_id", 256}};
  return concord::lm::model_config_from_json(j, "bench_data_parallel");
}

// One process of the job (rank from the environment): prints a JSON line on rank 0.
int worker(const Args& a) {
  // Through the runtime, so OpenBLAS's own pool gets the same size (core/runtime.h).
  ::setenv("CONCORD_NUM_THREADS", std::to_string(a.threads).c_str(), 1);
  concord::init_runtime();
  torch::manual_seed(0);
  concord::lm::CausalLM model(model_config(a));
  concord::train::TrainerOptions o;
  o.max_steps = a.warmup + a.steps;
  o.progress = false;
  o.shard_optimizer = a.shard_optimizer;
  o.overlap_grad_reduce = a.overlap;
  concord::train::Trainer trainer({{"model", model.ptr()}}, o);
  concord::train::NextTokenObjective objective(model);
  auto group = concord::train::default_process_group();
  const int64_t rank = group ? group->rank() : 0;
  RandomTokens data(model->config.vocab_size, a.batch, a.seq, 1000 + static_cast<uint64_t>(rank));
  std::vector<double> times;
  int64_t bytes0 = 0;
  for (int64_t s = 0; s < a.warmup + a.steps; ++s) {
    if (s == a.warmup) bytes0 = bytes_written();
    std::vector<concord::train::TokenBatch> micro{data.next()};
    const auto t0 = std::chrono::steady_clock::now();
    trainer.train_step(objective, micro);
    const auto t1 = std::chrono::steady_clock::now();
    if (s >= a.warmup) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  const int64_t bytes = bytes_written() - bytes0;
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  if (rank == 0) {
    const int world = group ? static_cast<int>(group->world_size()) : 1;
    const double step_ms = median(times);
    nlohmann::json out = {{"world", world},
                          {"params", params},
                          {"step_ms", step_ms},
                          {"tokens_per_s", 1000.0 * world * a.batch * a.seq / step_ms},
                          {"bytes_per_step", static_cast<double>(bytes) / a.steps}};
    std::cout << out.dump() << std::endl;
  }
  return 0;
}

// Runs `world` copies of this program as workers and returns rank 0's JSON line.
nlohmann::json job(const std::string& self, const std::vector<std::string>& argv, int world,
                   int port) {
  int pipe_fd[2];
  if (::pipe(pipe_fd) != 0) throw std::runtime_error("pipe failed");
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (r == 0) ::dup2(pipe_fd[1], 1);
      ::close(pipe_fd[0]);
      ::close(pipe_fd[1]);
      ::setenv("CONCORD_BENCH_WORKER", "1", 1);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::vector<char*> args{const_cast<char*>(self.c_str())};
      for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
      args.push_back(nullptr);
      ::execv(self.c_str(), args.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  ::close(pipe_fd[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fd[0], buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(pipe_fd[0]);
  for (pid_t pid : pids) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error("a worker failed");
  }
  return nlohmann::json::parse(out.substr(0, out.find('\n')));
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  concord::bench::Flags flags("bench_data_parallel");
  flags.add("model", &a.model).add("batch", &a.batch).add("seq", &a.seq).add("steps", &a.steps)
      .add("warmup", &a.warmup).add("world", &a.world).add("threads", &a.threads)
      .add("rounds", &a.rounds).on("shard-optimizer", &a.shard_optimizer)
      .on("no-overlap", &a.overlap, false);  // set by main for the comparison job, not a user flag
  if (!flags.parse(argc, argv)) return 2;
  const std::vector<std::string> passed(argv + 1, argv + argc);  // handed on to the jobs
  try {
    if (std::getenv("CONCORD_BENCH_WORKER") != nullptr) return worker(a);
    if (!concord::train::distributed_available()) {
      std::fprintf(stderr, "bench_data_parallel: this build has no Gloo backend\n");
      return 2;
    }
    char self[4096];
    const ssize_t len = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (len <= 0) throw std::runtime_error("cannot find this executable");
    self[len] = '\0';
    std::vector<double> efficiency, efficiency_after;
    std::vector<std::string> after_backward = passed;
    after_backward.push_back("--no-overlap");
    for (int round = 0; round < a.rounds; ++round) {
      const auto one = job(self, passed, 1, 29399);  // alone: the port is never opened
      const auto many = job(self, passed, a.world, 29400 + (::getpid() + round) % 500);
      const auto after = job(self, after_backward, a.world, 29900 + (::getpid() + round) % 500);
      const double params = many["params"].get<double>();
      const double bound = 2.0 * (a.world - 1) / a.world * 4.0 * params;
      const double single = a.world * one["tokens_per_s"].get<double>();
      const double e = many["tokens_per_s"].get<double>() / single;
      const double e_after = after["tokens_per_s"].get<double>() / single;
      efficiency.push_back(e);
      efficiency_after.push_back(e_after);
      std::printf("round %d: 1 process %.1f ms/step (%.0f tokens/s); %d processes %.1f ms/step "
                  "(%.0f tokens/s), efficiency %.2f (all-reduce after backward: %.1f ms/step, "
                  "%.2f); sent %.2f MB/step/rank, all-reduce lower bound %.2f MB (%.2fx)\n",
                  round, one["step_ms"].get<double>(), one["tokens_per_s"].get<double>(), a.world,
                  many["step_ms"].get<double>(), many["tokens_per_s"].get<double>(), e,
                  after["step_ms"].get<double>(), e_after,
                  many["bytes_per_step"].get<double>() / 1e6, bound / 1e6,
                  many["bytes_per_step"].get<double>() / bound);
    }
    std::printf("median efficiency %.2f, %.2f with the all-reduce after backward, over %d rounds "
                "(%d processes x %d threads vs 1 x %d, batch %lld x %lld per process%s)\n",
                median(efficiency), median(efficiency_after), a.rounds, a.world, a.threads,
                a.threads, static_cast<long long>(a.batch), static_cast<long long>(a.seq),
                a.shard_optimizer ? ", ZeRO-1" : "");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_data_parallel: %s\n", e.what());
    return 1;
  }
  return 0;
}
