// What nn::record_output costs (concord/nn/feature_capture.h), against the forward passes it
// sits in, measured in the same run.
//
//   bench_feature_capture [--config configs/models/tiny-llama.json] [--threads 1] [--iters 200]
//
// Every Concord module ends its forward with record_output(*this, y). With no capture active
// that is one thread-local read and a branch; this prints
//   off_ns_per_call   the median of 7 rounds of 10^6 record_output calls with no capture, per call,
//   calls_per_step    how many reports one decode step (one token against a KV cache) makes,
//   off_share         calls_per_step * off_ns_per_call / decode step time: the share of a decode
//                     step (the forward with the least work per report) spent in the reports;
//                     no build without the reports exists to time against, so this is the figure,
//   on_ratio          decode step with a capture of one block active / without (the active path:
//                     each report compares the module with the capture's targets),
// as one JSON object. A small model is the worst case: the reports are a fixed cost a module.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/torch.h>

#include "concord/core/runtime.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/nn/feature_capture.h"

#include "bench_flags.h"
#include "bench_timing.h"

int main(int argc, char** argv) {
  std::string config = "configs/models/tiny-llama.json";
  int threads = 1, iters = 200;
  concord::bench::Flags flags("bench_feature_capture");
  flags.add("config", &config).add("threads", &threads).add("iters", &iters);
  if (!flags.parse(argc, argv)) return 2;
  namespace cb = concord::bench;
  namespace cn = concord::nn;
  concord::init_runtime();
  at::set_num_threads(threads);
  torch::manual_seed(0);
  concord::lm::CausalLM model(concord::lm::load_any_model_config(config));
  c10::InferenceMode inference;

  // record_output alone, no capture active.
  // The tensor is moved in and out, as at the call sites (whose outputs are temporaries).
  at::Tensor y = torch::zeros({1, 1, model->config.hidden_size});
  const torch::nn::Module& module = *model->layers->ptr(0);
  constexpr int kCalls = 1000000;
  const double off_ms = cb::median_ms(
      [&] {
        for (int i = 0; i < kCalls; ++i) {
          y = cn::record_output(module, std::move(y));
          asm volatile("" : : "r"(y.unsafeGetTensorImpl()) : "memory");
        }
      },
      7);
  const double off_ns_per_call = off_ms * 1e6 / kCalls;

  // One decode step: a 32-token prompt in the cache, then one token.
  const at::Tensor prompt = torch::randint(0, model->config.vocab_size, {1, 32}, torch::kLong);
  const at::Tensor next = torch::randint(0, model->config.vocab_size, {1, 1}, torch::kLong);
  concord::nn::KVCache base = model->make_cache();
  base.reserve(64);  // room for the step token: no regrowth inside the timed step
  model->forward(prompt, {}, &base);
  auto step = [&] {
    concord::nn::KVCache cache = base;  // shares the buffers: one token appended past length()
    model->forward(next, {}, &cache);
  };
  // Reports per step: capture every path once with keep_all and count.
  size_t calls = 0;
  {
    std::vector<std::string> paths = {""};
    for (const auto& item : model->named_modules("", false)) {
      if (item.key() != "layers") paths.push_back(item.key());
    }
    cn::FeatureCapture all(model, cn::FeatureCaptureOptions(paths).keep_all(true));
    step();
    for (const auto& p : paths) calls += all.count(p);
  }
  const double off_step = cb::median_ms(step, iters);
  double on_step = 0;
  {
    cn::FeatureCapture one(model, {"layers.0"});
    on_step = cb::median_ms(step, iters);
  }
  const double off_share = static_cast<double>(calls) * off_ns_per_call * 1e-6 / off_step;
  std::printf(
      "{\"bench\": \"feature_capture\", \"config\": \"%s\", \"threads\": %d, "
      "\"off_ns_per_call\": %.3f, \"calls_per_step\": %zu, \"decode_step_ms\": %.4f, "
      "\"off_share\": %.2e, \"on_step_ms\": %.4f, \"on_ratio\": %.4f}\n",
      config.c_str(), threads, off_ns_per_call, calls, off_step, off_share, on_step,
      on_step / off_step);
  return 0;
}
