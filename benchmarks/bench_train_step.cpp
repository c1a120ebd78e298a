// Training-step throughput of a CausalLM: forward, cross-entropy over every position, backward
// and one AdamW step (torch::optim::AdamW, or Concord's train::AdamW with --optimizer concord),
// in tokens per second. The loss is the trainer's, CausalLM::token_loss (LM head and
// cross-entropy fused, ops/linear_cross_entropy.h); --loss composite computes the [B, T, V]
// logits and at::cross_entropy_loss instead. benchmarks/bench_train_step.py runs
// the same model (transformers' GPT2LMHeadModel with the same weights) in PyTorch eager on the
// same batches in the same run and prints the ratio; the baseline is named there.
//
//   bench_train_step --model MODEL [--data IDS.bin] [--batch 4] [--seq 256] [--steps 5]
//                    [--warmup 2] [--threads 2] [--lr 1e-4] [--optimizer torch|concord]
//                    [--loss fused|composite] [--profile TRACE.json]
// MODEL is a Hugging Face model folder (what the driver saves) or a model config file (fresh
// weights). IDS.bin holds int64 token ids laid out [warmup + steps, batch, seq + 1]: row b of
// step s gives inputs [0, seq) and targets [1, seq + 1). Without it, ids are drawn uniformly.
// Prints one JSON object: per-step losses (warm-up included) and times, the median step time and
// tokens per second over the timed steps, and the median time of each phase (forward with the
// loss, backward, optimizer step; zeroing the gradients counts in the first). --profile writes
// the last step's ATen ops as a Chrome trace (LibTorch's legacy profiler; bench_train_step.py
// --gemm-share reads it).
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/optim/adamw.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "concord/core/runtime.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/train/adamw.h"

#include "bench_flags.h"

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

double ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

double median_of(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, data, optimizer_name = "torch", profile_path, loss_name = "fused";
  int64_t batch = 4, seq = 256, steps = 5, warmup = 2;
  int threads = 2;
  double lr = 1e-4;
  concord::bench::Flags flags("bench_train_step");
  flags.add("model", &model_path).add("data", &data).add("batch", &batch).add("seq", &seq)
      .add("steps", &steps).add("warmup", &warmup).add("threads", &threads).add("lr", &lr)
      .add("optimizer", &optimizer_name).add("profile", &profile_path).add("loss", &loss_name);
  if (!flags.parse(argc, argv)) return 2;
  if (model_path.empty() || steps < 1 || warmup < 0 ||
      (optimizer_name != "torch" && optimizer_name != "concord") ||
      (loss_name != "fused" && loss_name != "composite")) {
    std::fprintf(stderr, "bench_train_step: --model is needed, --steps >= 1, --warmup >= 0, "
                 "--optimizer torch|concord, --loss fused|composite\n%s\n", flags.usage().c_str());
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
    const bool fused_loss = loss_name == "fused";
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
    std::map<std::string, std::vector<double>> phases;  // per timed step, where the time goes
    for (int64_t s = 0; s < total; ++s) {
      const at::Tensor inputs = ids[s].narrow(1, 0, seq).contiguous();
      const at::Tensor targets = ids[s].narrow(1, 1, seq).contiguous();
      std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
      if (!profile_path.empty() && s + 1 == total) {
        profile = std::make_unique<torch::autograd::profiler::RecordProfile>(profile_path);
      }
      const auto t0 = std::chrono::steady_clock::now();
      if (torch_adamw) {
        torch_adamw->zero_grad();
      } else {
        concord_adamw->zero_grad();
      }
      // The trainer's loss (CausalLM::token_loss: LM head and cross-entropy fused), or with
      // --loss composite the [B, T, V] logits and at::cross_entropy_loss on them.
      const at::Tensor loss =
          fused_loss ? model->token_loss(model->hidden_states(inputs), targets)
                     : at::cross_entropy_loss(model->forward(inputs).view({-1, vocab}),
                                              targets.view({-1}));
      const auto t_forward = std::chrono::steady_clock::now();
      loss.backward();
      const auto t_backward = std::chrono::steady_clock::now();
      if (torch_adamw) {
        torch_adamw->step();
      } else {
        concord_adamw->step();
      }
      const double value = loss.item<double>();
      const auto t1 = std::chrono::steady_clock::now();
      if (s >= warmup) {
        phases["forward_loss"].push_back(ms(t0, t_forward));
        phases["backward"].push_back(ms(t_forward, t_backward));
        phases["optimizer"].push_back(ms(t_backward, t1));
      }
      profile.reset();  // writes the trace, outside the timed span
      losses.push_back(value);
      if (s >= warmup) times.push_back(ms(t0, t1));
    }
    const double median = median_of(times);
    nlohmann::json phase_ms;
    for (const auto& [name, values] : phases) phase_ms[name] = median_of(values);
    nlohmann::json result = {{"losses", losses},
                             {"step_ms", times},
                             {"median_step_ms", median},
                             {"median_phase_ms", phase_ms},
                             {"tokens_per_s", static_cast<double>(batch * seq) / (median / 1e3)},
                             {"threads", at::get_num_threads()},
                             {"optimizer", optimizer_name},
                             {"loss", loss_name},
                             {"parameters", model->num_parameters()},
                             {"libtorch", TORCH_VERSION}};
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
