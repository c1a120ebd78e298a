// Generation throughput of lm::generate (greedy, KV cache), for benchmarks/bench_generate.py,
// which runs transformers' generate on the same model folder and prompts in the same run,
// checks the ids are identical and prints the ratio (the baseline is named there).
//
//   bench_generate --model DIR --prompts PROMPTS.json [--new-tokens 64] [--repeat 3]
//                  [--threads 2] [--ids-out FILE]
// PROMPTS.json is a JSON array of token-id arrays (one batch). Every run generates exactly
// --new-tokens tokens a prompt unless the model config names an EOS that is produced. Prints
// one JSON object: the median wall time of `repeat` calls after one warm-up call (prefill and
// decoding together), new tokens per second, and the ids of the last call with --ids-out.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/version.h>

#include "concord/core/runtime.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"

#include "bench_flags.h"

int main(int argc, char** argv) {
  std::string model_path, prompts_path, ids_out;
  int64_t new_tokens = 64;
  int repeat = 3, threads = 2;
  concord::bench::Flags flags("bench_generate");
  flags.add("model", &model_path).add("prompts", &prompts_path).add("new-tokens", &new_tokens)
      .add("repeat", &repeat).add("threads", &threads).add("ids-out", &ids_out);
  if (!flags.parse(argc, argv)) return 2;
  if (model_path.empty() || prompts_path.empty() || repeat < 1) {
    std::fprintf(stderr, "bench_generate: --model, --prompts and --repeat >= 1 are needed\n%s\n",
                 flags.usage().c_str());
    return 2;
  }
  try {
    concord::init_runtime();
    at::set_num_threads(threads);
    auto model = concord::lm::load_pretrained(model_path);
    std::ifstream in(prompts_path);
    const auto prompts = nlohmann::json::parse(in).get<std::vector<std::vector<int64_t>>>();
    concord::lm::GenerationOptions options;
    options.max_new_tokens = new_tokens;
    std::vector<concord::lm::Generation> out;
    std::vector<double> times;
    for (int r = 0; r <= repeat; ++r) {  // call 0 is the warm-up
      const auto t0 = std::chrono::steady_clock::now();
      out = concord::lm::generate(model, prompts, options);
      const auto t1 = std::chrono::steady_clock::now();
      if (r > 0) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double median = times[times.size() / 2];
    // The memory floor of decoding: each new token multiplies every weight matrix by a vector,
    // so it reads every parameter once, and no implementation can make a token faster than one
    // pass over the weights at the memory bandwidth this process gets. Measured as a sum over
    // every parameter (vectorised, same thread count), median of 5 passes.
    std::vector<double> reads;
    int64_t weight_bytes = 0;
    for (const auto& p : model->parameters()) weight_bytes += p.numel() * p.element_size();
    for (int r = 0; r < 6; ++r) {
      at::NoGradGuard no_grad;
      const auto t0 = std::chrono::steady_clock::now();
      double sink = 0;
      for (const auto& p : model->parameters()) sink += p.sum().item<double>();
      const auto t1 = std::chrono::steady_clock::now();
      if (r > 0 && std::isfinite(sink)) {
        reads.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    }
    std::sort(reads.begin(), reads.end());
    const double read_ms = reads.empty() ? 0.0 : reads[reads.size() / 2];
    int64_t generated = 0;
    std::vector<std::vector<int64_t>> ids;
    for (const auto& g : out) {
      generated += static_cast<int64_t>(g.tokens.size());
      ids.push_back(g.tokens);
    }
    if (!ids_out.empty()) std::ofstream(ids_out) << nlohmann::json(ids).dump() << "\n";
    nlohmann::json result = {{"median_ms", median},
                             {"new_tokens", generated},
                             {"tokens_per_s", static_cast<double>(generated) / (median / 1e3)},
                             {"weights_bytes", weight_bytes},
                             {"weights_read_ms", read_ms},
                             {"threads", at::get_num_threads()},
                             {"libtorch", TORCH_VERSION}};
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
