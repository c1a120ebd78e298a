// DataParallel in one process: two ranks on threads, each with its own ProcessGroup over
// loopback. The gradients they end with are the sum of both ranks' (checked against the sum
// computed here), the buckets go out during backward (the overlap), a parameter one rank does
// not use this step costs no deadlock, and the hooks leave with the DataParallel object.
#include <gtest/gtest.h>

#include <future>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "concord/train/data_parallel.h"
#include "concord/train/process_group.h"

using namespace concord::train;

namespace {

// Four linear layers, ~4 KB of gradients each: with 4 KB buckets, one bucket per layer or so.
struct Net : torch::nn::Module {
  Net() {
    for (int i = 0; i < 4; ++i) layers.push_back(register_module("l" + std::to_string(i), torch::nn::Linear(32, 32)));
  }
  // `skip_last`: this rank's batch does not reach the last layer (its gradient stays absent).
  at::Tensor forward(at::Tensor x, bool skip_last) {
    for (size_t i = 0; i < layers.size(); ++i) {
      if (skip_last && i + 1 == layers.size()) break;
      x = torch::tanh(layers[i]->forward(x));
    }
    return x.square().sum();
  }
  std::vector<torch::nn::Linear> layers;
};

std::vector<std::pair<std::string, at::Tensor>> named(Net& net) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : net.named_parameters()) out.emplace_back(p.key(), p.value());
  return out;
}

// The threads share LibTorch's default generator: the weights are made one rank at a time, and
// the inputs from generators of their own.
std::shared_ptr<Net> make_net() {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  torch::manual_seed(0);
  return std::make_shared<Net>();
}

at::Tensor inputs(int64_t rank, int step) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(100 + rank + 10 * step));
  return at::randn({8, 32}, gen);
}

struct RankResult {
  std::vector<at::Tensor> grads;
  int64_t sent_early = 0;
};

// Both ranks start from the same weights (seed 0), see their own inputs, and sum gradients.
RankResult run_rank(int64_t rank, int port, bool skip_last_on_rank1, int steps) {
  auto net = make_net();
  ProcessGroupOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.master_port = port;
  o.timeout_s = 30;
  auto group = std::make_shared<ProcessGroup>(o);
  RankResult result;
  {
    DataParallel dp(group, named(*net), DataParallelOptions{4.5 / 1024, false});
    for (int s = 0; s < steps; ++s) {
      dp.begin_step();
      dp.arm();
      net->forward(inputs(rank, s), skip_last_on_rank1 && rank == 1).backward();
      dp.all_reduce_gradients();
      result.sent_early = dp.buckets_sent_during_backward();
    }
    for (const auto& p : net->parameters()) result.grads.push_back(p.grad().clone());
  }
  // The hooks are gone with `dp`: a backward now touches nothing of it.
  net->zero_grad();
  net->forward(inputs(rank, 0), false).backward();
  return result;
}

// The gradient of the last step's inputs, both ranks' summed, computed in one process.
std::vector<at::Tensor> expected_sum(bool skip_last_on_rank1, int steps) {
  std::vector<at::Tensor> sum;
  for (int64_t rank = 0; rank < 2; ++rank) {
    auto net = make_net();
    for (int s = 0; s < steps; ++s) {
      net->zero_grad();
      net->forward(inputs(rank, s), skip_last_on_rank1 && rank == 1).backward();
    }
    auto params = net->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor g = params[i].grad().defined() ? params[i].grad() : at::zeros_like(params[i]);
      if (rank == 0) {
        sum.push_back(g.clone());
      } else {
        sum[i] += g;
      }
    }
  }
  return sum;
}

int free_port() {
  std::random_device device;
  return 20000 + static_cast<int>(device() % 20000);
}

void check(bool skip_last_on_rank1) {
  if (!distributed_available()) GTEST_SKIP() << "built without c10d's Gloo backend";
  const int steps = 2;  // the second step reuses the buckets
  const int port = free_port();
  auto r0 = std::async(std::launch::async, run_rank, 0, port, skip_last_on_rank1, steps);
  auto r1 = std::async(std::launch::async, run_rank, 1, port, skip_last_on_rank1, steps);
  const RankResult a = r0.get(), b = r1.get();
  const auto want = expected_sum(skip_last_on_rank1, steps);
  ASSERT_EQ(a.grads.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a.grads[i], want[i], 1e-5, 1e-6)) << "rank 0, parameter " << i;
    EXPECT_TRUE(torch::equal(a.grads[i], b.grads[i])) << "ranks differ at parameter " << i;
  }
  // Backward runs from the last layer down; its buckets come first in the send order.
  if (skip_last_on_rank1) {
    // Rank 1's first bucket (the last layer) never completes: nothing may go out early there,
    // and rank 0 may still send early.
    EXPECT_EQ(b.sent_early, 0);
  } else {
    EXPECT_GE(a.sent_early, 3) << "buckets were not sent during backward";
    EXPECT_GE(b.sent_early, 3);
  }
}

}  // namespace

TEST(DataParallel, SumsGradientsSendingBucketsDuringBackward) { check(false); }

TEST(DataParallel, AParameterUnusedOnOneRankGetsTheOthersGradient) { check(true); }
