// Text to image end to end with diffusion::SdxlPipeline on the CPU, for
// benchmarks/bench_sdxl_pipeline.py, which runs diffusers' StableDiffusionXLPipeline on the same
// folder, prompts and initial noise in the same run (the baseline), each side in a process of its
// own so that each peak resident set is its own.
//
//   bench_sdxl_pipeline --pipeline DIR [--prompt TEXT]... [--negative-prompt TEXT]
//                       [--noise FILE] [--steps 10] [--guidance 5.0] [--height 0] [--width 0]
//                       [--warmup 1] [--iters 3] [--threads 2] [--output FILE] [--profile]
//                       [--inference-mode]
//
// DIR is a diffusers StableDiffusionXLPipeline folder (SdxlPipeline::load). --prompt may be given
// several times (default: one prompt); without --negative-prompt the negative branch is zeros
// (force_zeros_for_empty_prompt), as diffusers does with negative_prompt=None. --noise is a
// safetensors file whose tensor "noise" [N, 4, h, w] is generate()'s initial_noise (diffusers'
// latents= argument, before init_noise_sigma); without it the noise comes from seed 0. Height and
// width 0: the U-Net's sample_size * vae_scale_factor.
//
// Each call is one generate(prompts, options, noise, decode=true), the library's own entry point
// (NoGradGuard inside, as diffusers' __call__ runs under no_grad). `warmup` untimed calls, then
// `iters` timed ones. The phases of a call come from its on_step callback, stamped after each
// Euler step:
//   decode     = end of the call - the last step's stamp (VAE decode and postprocess)
//   denoising  = (last stamp - first stamp) * n / (n - 1): the n steps at the mean time of steps
//                2..n (the first step's own time cannot be told apart from what precedes it)
//   text       = the call - denoising - decode: tokenising, both text encoders (twice with a
//                negative prompt), the conditioning tensors and the noise scaling
// and the text phase is also timed alone (`text_alone`): SdxlTextEncoders::encode, and
// encode_negative with guidance, as generate() calls them, `iters` times after one warm-up.
// Medians over the timed calls. The Python worker computes its phases the same way from
// diffusers' callback_on_step_end.
//
// Prints one JSON line: seconds (median call; min, mean), the phases, seconds_per_step (and each
// step of the last call: last_call_step_seconds), peak_rss_bytes (VmHWM of /proc/self/status)
// and rss_after_load_bytes (VmRSS once the pipeline is loaded: the weights and LibTorch),
// parameters per component, load_seconds, and with --profile profile_wall_ms. --output writes
// the last call's "latents" [N, 4, h, w] and "images" [N, 3, H, W] (fp32) as safetensors.
// --profile adds the self time of each ATen operator by phase: "text" per call (over the
// text_alone calls), "denoising" per step (steps 2..n of the timed calls), "decode" per call
// (RecordFunction callbacks on the calling thread; they slow the calls: leave it off for the
// figures). --inference-mode is an experiment, not the library's behaviour: each call under
// c10::InferenceMode (no version counters or view tracking; the results are inference tensors),
// to see what generate()'s NoGradGuard costs.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include "concord/core/runtime.h"
#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/io/safetensors.h"

#include "bench_flags.h"
#include "bench_memory.h"
#include "bench_op_profile.h"
#include "bench_timing.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using concord::bench::median;
using concord::bench::status_bytes;

namespace {

double seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

int64_t count_parameters(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  std::string pipeline_path, noise_path, output_path;
  std::vector<std::string> prompts;
  std::optional<std::string> negative;
  int64_t steps = 10, height = 0, width = 0;
  double guidance = 5.0;
  int warmup = 1, iters = 3, threads = 2;
  bool profile = false, inference_mode = false;
  concord::bench::Flags flags("bench_sdxl_pipeline");
  flags.add("pipeline", &pipeline_path).add("prompt", &prompts).add("negative-prompt", &negative)
      .add("noise", &noise_path).add("steps", &steps).add("guidance", &guidance)
      .add("height", &height).add("width", &width).add("warmup", &warmup).add("iters", &iters)
      .add("threads", &threads).add("output", &output_path).on("profile", &profile)
      .on("inference-mode", &inference_mode);
  if (!flags.parse(argc, argv)) return 2;
  if (pipeline_path.empty() || iters < 1 || warmup < 0 || steps < 1 || threads < 1) {
    std::fprintf(stderr, "bench_sdxl_pipeline: --pipeline DIR is needed, --iters, --steps and "
                 "--threads >= 1, --warmup >= 0\n%s\n", flags.usage().c_str());
    return 2;
  }
  if (prompts.empty()) prompts.push_back("a photo of an astronaut riding a horse on mars");
  try {
    // init_runtime sizes LibTorch's pool and OpenBLAS's own (Debian's LibTorch) from this
    // variable; at::set_num_threads afterwards would leave OpenBLAS at the machine's core count.
    setenv("CONCORD_NUM_THREADS", std::to_string(threads).c_str(), 1);
    concord::init_runtime();
    at::set_num_threads(threads);

    const auto t_load = Clock::now();
    auto pipe = concord::diffusion::SdxlPipeline::load(pipeline_path);
    const double load_s = seconds(t_load, Clock::now());
    const int64_t rss_after_load = status_bytes("VmRSS");

    concord::diffusion::SdxlGenerateOptions options;
    options.height = height;
    options.width = width;
    options.num_inference_steps = steps;
    options.guidance_scale = guidance;
    if (negative) options.negative_prompt = std::vector<std::string>{*negative};
    at::Tensor noise;
    if (!noise_path.empty()) {
      auto tensors = concord::io::load_safetensors(noise_path);
      auto it = tensors.find("noise");
      TORCH_CHECK(it != tensors.end(), noise_path, ": no tensor 'noise'");
      noise = it->second.clone();
    }

    // One call, stamped after each step.
    struct Stamps {
      Clock::time_point start, end;
      std::vector<Clock::time_point> steps;
    };
    concord::bench::OpProfile prof;
    auto call = [&](Stamps& s) {
      s.steps.clear();
      prof.set_phase("first_step");  // the text phase and step 1: not reported
      s.start = Clock::now();
      std::optional<c10::InferenceMode> guard;
      if (inference_mode) guard.emplace();
      auto out = pipe.generate(prompts, options, noise, /*decode=*/true,
                               [&](int64_t i, int64_t n) {
                                 s.steps.push_back(Clock::now());
                                 prof.set_phase(i == n ? "decode" : "denoising");
                               });
      s.end = Clock::now();
      return out;
    };

    Stamps stamps;
    concord::diffusion::SdxlGeneration out;
    for (int i = 0; i < warmup; ++i) out = call(stamps);
    if (profile) prof.start();
    std::vector<double> total, text, denoise, decode, per_step;
    for (int i = 0; i < iters; ++i) {
      out = call(stamps);
      const auto n = static_cast<int64_t>(stamps.steps.size());
      const double all = seconds(stamps.start, stamps.end);
      const double dec = seconds(stamps.steps.back(), stamps.end);
      const double step = n > 1 ? seconds(stamps.steps.front(), stamps.steps.back()) / (n - 1)
                                : seconds(stamps.start, stamps.steps.front());
      total.push_back(all);
      decode.push_back(dec);
      per_step.push_back(step);
      denoise.push_back(step * n);
      text.push_back(all - step * n - dec);
    }

    // The text phase alone, through the same library calls generate() makes (and profiled here:
    // in a call its operators cannot be told apart from the first step's).
    std::vector<double> text_alone;
    const bool cfg = guidance > 1.0;
    const bool zeros = !negative && pipe.force_zeros_for_empty_prompt();
    for (int i = 0; i < iters + 1; ++i) {
      prof.set_phase(i == 0 ? "warmup" : "text");
      const auto t0 = Clock::now();
      const auto positive = pipe.text().encode(prompts);
      if (cfg) {
        pipe.text().encode_negative(negative ? std::vector<std::string>{*negative}
                                              : std::vector<std::string>{},
                                    positive, zeros);
      }
      if (i > 0) text_alone.push_back(seconds(t0, Clock::now()));
    }
    prof.stop();
    // Each step of the last timed call (the first includes the text phase), to see drift.
    std::vector<double> last_steps;
    for (size_t i = 0; i < stamps.steps.size(); ++i) {
      last_steps.push_back(seconds(i == 0 ? stamps.start : stamps.steps[i - 1], stamps.steps[i]));
    }

    if (!output_path.empty()) {
      concord::io::save_safetensors(output_path,
                                    {{"latents", out.latents.to(at::kFloat).contiguous()},
                                     {"images", out.images.to(at::kFloat).contiguous()}});
    }
    const auto& te = pipe.text();
    nlohmann::json params = {{"unet", pipe.unet()->num_parameters()},
                             {"vae", count_parameters(*pipe.vae())},
                             {"text_encoder_2", count_parameters(*te.text_encoder_2())}};
    if (te.has_first_encoder()) params["text_encoder"] = count_parameters(*te.text_encoder());
    const double mean = std::accumulate(total.begin(), total.end(), 0.0) / total.size();
    nlohmann::json result = {
        {"seconds", median(total)},
        {"min_seconds", *std::min_element(total.begin(), total.end())},
        {"mean_seconds", mean},
        {"phases", {{"text", median(text)}, {"denoising", median(denoise)},
                    {"decode", median(decode)}, {"text_alone", median(text_alone)}}},
        {"seconds_per_step", median(per_step)},
        {"steps", static_cast<int64_t>(stamps.steps.size())},
        {"last_call_step_seconds", last_steps},
        {"peak_rss_bytes", status_bytes("VmHWM")},
        {"rss_after_load_bytes", rss_after_load},
        {"parameters", params},
        {"load_seconds", load_s},
        {"prompts", prompts.size()},
        {"latents_shape", out.latents.sizes().vec()},
        {"images_shape", out.images.sizes().vec()},
        {"guidance_scale", guidance},
        {"inference_mode", inference_mode},
        {"threads", at::get_num_threads()},
        {"libtorch", TORCH_VERSION}};
    if (profile) {
      // text and decode per call, denoising per step (steps 2..n of each call).
      const int64_t n = static_cast<int64_t>(stamps.steps.size());
      const std::map<std::string, double> per = {
          {"text", iters}, {"decode", iters}, {"denoising", static_cast<double>(iters * (n - 1))}};
      nlohmann::json phases = nlohmann::json::object();
      for (const auto& [phase, ops] : prof.self_ms()) {
        auto it = per.find(phase);
        if (it == per.end() || it->second <= 0) continue;
        for (const auto& [name, ms] : ops) {
          phases[phase][name] = {{"ms", ms / it->second},
                                 {"calls", prof.calls(phase, name) / it->second}};
        }
      }
      result["profile"] = phases;
      // The wall time the profiled operators ran in, on the same denominators (the medians above
      // are of other intervals; these are the sums over the profiled ones).
      const double steps_sum = std::accumulate(per_step.begin(), per_step.end(), 0.0);
      result["profile_wall_ms"] = {
          {"text", 1e3 * std::accumulate(text_alone.begin(), text_alone.end(), 0.0) / iters},
          {"denoising", 1e3 * steps_sum / iters},
          {"decode", 1e3 * std::accumulate(decode.begin(), decode.end(), 0.0) / iters}};
    }
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sdxl_pipeline: %s\n", e.what());
    return 1;
  }
  return 0;
}
