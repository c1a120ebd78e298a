// Training-step throughput of a CausalLM: forward, cross-entropy over every position, backward
// and one AdamW step (torch::optim::AdamW, or Concord's train::AdamW with --optimizer concord),
// in tokens per second. benchmarks/bench_train_step.py runs
// the same model (transformers' GPT2LMHeadModel with the same weights) in PyTorch eager on the
// same batches in the same run and prints the ratio; the baseline is named there.
//
//   bench_train_step --model MODEL [--data IDS.bin] [--batch 4] [--seq 256] [--steps 5]
//                    [--warmup 2] [--threads 2] [--lr 1e-4] [--optimizer torch|concord]
// MODEL is a Hugging Face model folder (what the driver saves) or a model config file (fresh
// weights). IDS.bin holds int64 token ids laid out [warmup + steps, batch, seq + 1]: row b of
// step s gives inputs [0, seq) and targets [1, seq + 1). Without it, ids are drawn uniformly.
// Prints one JSON object: per-step losses (warm-up included) and times, the median step time and
// tokens per second over the timed steps.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "concord/core/runtime.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/train/adamw.h"

namespace fs = std::filesystem;

namespace {

at::Tensor read_ids(const std::string& path, int64_t steps, int64_t batch, int64_t seq) {
  const int64_t want = steps * batch * (seq + 1);
  const auto bytes = static_cast<int64_t>(fs::file_size(path));
  if (bytes < want * 8) {
    throw std::runtime_error(path + " holds " + std::to_string(bytes / 8) + " ids, need " +
                             std::to_string(want));
  }
  at::Tensor ids = at::empty({steps, batch, seq + 1}, at::kLong);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(ids.data_ptr<int64_t>()), want * 8);
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, data, optimizer_name = "torch";
  int64_t batch = 4, seq = 256, steps = 5, warmup = 2;
  int threads = 2;
  double lr = 1e-4;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") model_path = value;
    else if (flag == "--data") data = value;
    else if (flag == "--batch") batch = std::stoll(value);
    else if (flag == "--seq") seq = std::stoll(value);
    else if (flag == "--steps") steps = std::stoll(value);
    else if (flag == "--warmup") warmup = std::stoll(value);
    else if (flag == "--threads") threads = std::stoi(value);
    else if (flag == "--lr") lr = std::stod(value);
    else if (flag == "--optimizer") optimizer_name = value;
    else {
      std::fprintf(stderr, "bench_train_step: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (model_path.empty() || steps < 1 || warmup < 0 ||
      (optimizer_name != "torch" && optimizer_name != "concord")) {
    std::fprintf(stderr, "usage: %s --model MODEL [--data IDS.bin] [--batch B] [--seq T] "
                 "[--steps N] [--warmup W] [--threads N] [--lr LR] [--optimizer torch|concord]\n",
                 argv[0]);
    return 2;
  }
  try {
    concord::init_runtime();
    at::set_num_threads(threads);
    torch::manual_seed(0);
    concord::lm::CausalLM model =
        fs::is_directory(model_path)
            ? concord::lm::load_pretrained(model_path)
            : concord::lm::CausalLM(concord::lm::load_any_model_config(model_path));
    model->train();
    const int64_t vocab = model->config.vocab_size;
    const int64_t total = warmup + steps;
    const at::Tensor ids = data.empty() ? at::randint(vocab, {total, batch, seq + 1}, at::kLong)
                                        : read_ids(data, total, batch, seq);
    // The baseline's hyper-parameters (bench_train_step.py). torch::optim::AdamW decays every
    // parameter, as the baseline does; train::AdamW exempts biases and norm gains (its rule),
    // which changes the losses after the first step but not the work done.
    std::unique_ptr<torch::optim::AdamW> torch_adamw;
    std::unique_ptr<concord::train::AdamW> concord_adamw;
    if (optimizer_name == "torch") {
      torch_adamw = std::make_unique<torch::optim::AdamW>(
          model->parameters(),
          torch::optim::AdamWOptions(lr).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
    } else {
      std::vector<std::pair<std::string, at::Tensor>> named;
      for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
      concord::train::AdamWOptions o;
      o.lr = lr;
      concord_adamw = std::make_unique<concord::train::AdamW>(std::move(named), o);
    }

    std::vector<double> losses, times;
    for (int64_t s = 0; s < total; ++s) {
      const at::Tensor inputs = ids[s].narrow(1, 0, seq).contiguous();
      const at::Tensor targets = ids[s].narrow(1, 1, seq).contiguous();
      const auto t0 = std::chrono::steady_clock::now();
      if (torch_adamw) {
        torch_adamw->zero_grad();
      } else {
        concord_adamw->zero_grad();
      }
      const at::Tensor logits = model->forward(inputs);
      const at::Tensor loss = at::cross_entropy_loss(logits.view({-1, vocab}), targets.view({-1}));
      loss.backward();
      if (torch_adamw) {
        torch_adamw->step();
      } else {
        concord_adamw->step();
      }
      const double value = loss.item<double>();
      const auto t1 = std::chrono::steady_clock::now();
      losses.push_back(value);
      if (s >= warmup) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double median = sorted[sorted.size() / 2];
    nlohmann::json result = {{"losses", losses},
                             {"step_ms", times},
                             {"median_step_ms", median},
                             {"tokens_per_s", static_cast<double>(batch * seq) / (median / 1e3)},
                             {"threads", at::get_num_threads()},
                             {"optimizer", optimizer_name},
                             {"parameters", model->num_parameters()},
                             {"libtorch", TORCH_VERSION}};
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
