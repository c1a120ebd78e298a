// One forward pass of the SDXL / KOALA conditional U-Net (diffusion::UNet2DCondition) on the CPU
// or a CUDA device, for benchmarks/bench_unet.py, which runs diffusers' UNet2DConditionModel on
// the same folder and inputs in the same run (the baseline) and compares the KOALA students with
// SDXL's U-Net, each in a process of its own so that each peak resident set is its own.
//
//   bench_unet --model DIR|CONFIG [--batch 2] [--latent 32] [--text-length 77] [--warmup 1]
//              [--iters 5] [--threads 2] [--dtype fp32|bf16] [--inputs FILE] [--output FILE]
//              [--profile] [--channels-last] [--direct-conv] [--backward] [--device cpu|cuda]
//
// DIR is a diffusers folder (config.json + diffusion_pytorch_model*.safetensors, read with
// diffusion::load_unet); CONFIG a config.json file, built with Concord's random initialisation
// (the weights do not change the work of a forward pass). Inputs are fixed: drawn from seed 0
// ([B, 4, latent, latent] latents, [B, L, cross_attention_dim] text states, the pooled text
// embedding, timesteps 999 / 10 / ..., SDXL's time ids for a latent*8 image), or read from
// --inputs (safetensors with sample, timestep, encoder_hidden_states and, for text_time models,
// text_embeds and time_ids: the driver's inputs, so both implementations see the same tensors).
// --output writes the last forward's prediction as safetensors ("sample_out").
//
// Runs under torch::InferenceMode (which implies no autograd recording), `warmup` untimed calls,
// then `iters` timed ones. Prints one JSON line: seconds_per_forward (median), min and mean,
// peak_rss_bytes (VmHWM of /proc/self/status: the weights, the activations and LibTorch
// together), parameters, load_seconds. With --device cuda the model is built or loaded on the
// CPU and moved, each timed call waits for the device, and peak_device_bytes is the most the
// CUDA caching allocator handed out at once (weights, activations and workspaces: what the U-Net
// needs of the device's memory); without a device it prints {"skipped": ...} and exits 0.
// --profile adds the self time of each ATen operator per forward (RecordFunction callbacks on the
// calling thread, over the timed calls; the profiled calls are timed too, so leave it off for the
// figures): what is not under any operator is Concord's own kernels (ops::attention) and the
// module code around them. --channels-last is an experiment, not the library's behaviour: the
// 4-d weights and the latents in NHWC layout, which the convolutions then keep, to see whether
// layout conversions around oneDNN's convolutions and the transformers' NCHW -> [B, HW, C]
// permutation cost anything (docs/benchmarks.md: they did not, here). --direct-conv turns off
// ops::conv3x3's Winograd forward (ops/conv3x3.h), so the 3x3 convolutions run ATen's: the
// library as it was before Winograd, for measuring what Winograd gains in the whole U-Net.
// --backward times a training step's model work instead of a forward: each timed call runs the
// forward under autograd and backward() of <g, prediction> for a fixed cotangent g (the inputs
// file's "cotangent", else N(0, 1) from seed 1) into every parameter's gradient (reset before
// each call); --output then also writes the gradients named in kGradientsWritten.
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
#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/diffusion/unet_config.h"
#include "concord/io/safetensors.h"
#include "concord/ops/conv3x3.h"

#include "bench_device.h"
#include "bench_flags.h"
#include "bench_memory.h"
#include "bench_op_profile.h"

namespace fs = std::filesystem;
using concord::diffusion::UNet2DCondition;
using concord::diffusion::UNetInputs;
using concord::bench::status_bytes;

namespace {

UNetInputs fixed_inputs(const concord::diffusion::UNetConfig& c, int64_t batch, int64_t latent,
                        int64_t text_length) {
  auto gen = at::detail::createCPUGenerator(0);
  UNetInputs in;
  in.sample = at::randn({batch, c.in_channels, latent, latent}, gen);
  std::vector<float> t(batch);
  for (int64_t b = 0; b < batch; ++b) t[b] = b % 2 == 0 ? 999.0f : 10.0f + 100.0f * (b / 2);
  in.timesteps = at::tensor(t);
  in.encoder_hidden_states = at::randn({batch, text_length, c.cross_attention_dim}, gen);
  if (c.addition_embed_type == "text_time") {
    const int64_t pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim;
    in.text_embeds = at::randn({batch, pooled}, gen);
    const float px = static_cast<float>(latent * 8);
    in.time_ids = at::tensor(std::vector<float>{px, px, 0, 0, px, px}).repeat({batch, 1});
  }
  return in;
}

// Gradients --backward --output writes beside the prediction (diffusers' names): the first
// convolution, a 3x3 convolution at each of the first two levels, a self-attention projection.
const char* const kGradientsWritten[] = {
    "conv_in.weight", "down_blocks.0.resnets.0.conv1.weight",
    "down_blocks.1.resnets.0.conv2.weight",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"};

UNetInputs read_inputs(const fs::path& path) {
  auto t = concord::io::load_safetensors(path);
  auto take = [&](const char* key, bool required) -> at::Tensor {
    auto it = t.find(key);
    TORCH_CHECK(it != t.end() || !required, path.string(), ": no tensor '", key, "'");
    return it == t.end() ? at::Tensor() : it->second.clone();
  };
  UNetInputs in;
  in.sample = take("sample", true);
  in.timesteps = take("timestep", true);
  in.encoder_hidden_states = take("encoder_hidden_states", true);
  in.text_embeds = take("text_embeds", false);
  in.time_ids = take("time_ids", false);
  return in;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, inputs_path, output_path, dtype_name = "fp32", device_name = "cpu";
  int64_t batch = 2, latent = 32, text_length = 77;
  int warmup = 1, iters = 5, threads = 2;
  bool profile = false, channels_last = false, direct_conv = false, backward = false;
  concord::bench::Flags flags("bench_unet");
  flags.add("model", &model_path)
      .add("batch", &batch)
      .add("latent", &latent)
      .add("text-length", &text_length)
      .add("warmup", &warmup)
      .add("iters", &iters)
      .add("threads", &threads)
      .add("dtype", &dtype_name)
      .add("inputs", &inputs_path)
      .add("output", &output_path)
      .on("profile", &profile)
      .on("channels-last", &channels_last)
      .on("direct-conv", &direct_conv)
      .on("backward", &backward)
      .add("device", &device_name);
  if (!flags.parse(argc, argv)) return 2;
  if (model_path.empty() || iters < 1 || warmup < 0 || batch < 1 || latent < 1 ||
      (dtype_name != "fp32" && dtype_name != "bf16") ||
      (device_name != "cpu" && device_name != "cuda")) {
    std::fprintf(stderr, "bench_unet: --model DIR|CONFIG is needed, --iters >= 1, --warmup >= 0, "
                 "--batch and --latent >= 1, --dtype fp32|bf16, --device cpu|cuda\n%s\n",
                 flags.usage().c_str());
    return 2;
  }
  torch::Device device(torch::kCPU);
  if (!concord::bench::parse_device(device_name, device)) {
    std::printf("{\"skipped\": \"no CUDA device\", \"device\": \"cuda\"}\n");
    return 0;
  }
  try {
    // init_runtime sizes LibTorch's pool and OpenBLAS's own (Debian's LibTorch) from this
    // variable; at::set_num_threads afterwards would leave OpenBLAS at the machine's core count.
    setenv("CONCORD_NUM_THREADS", std::to_string(threads).c_str(), 1);
    concord::init_runtime();
    at::set_num_threads(threads);
    if (direct_conv) concord::ops::set_conv3x3_winograd(concord::ops::Conv3x3Winograd::kNever);
    const at::ScalarType dtype = dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
    const auto t_load = std::chrono::steady_clock::now();
    UNet2DCondition unet{nullptr};
    if (fs::is_directory(model_path)) {
      concord::diffusion::UNetLoadOptions options;
      options.dtype = dtype;
      unet = concord::diffusion::load_unet(model_path, options);
    } else {
      at::manual_seed(0);
      unet = UNet2DCondition(concord::diffusion::load_unet_config(model_path));
      unet->to(dtype);
      unet->eval();
    }
    unet->to(device);
    concord::bench::sync(device);
    const double load_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
    const auto& config = unet->config;
    UNetInputs in = inputs_path.empty() ? fixed_inputs(config, batch, latent, text_length)
                                        : read_inputs(inputs_path);
    in.sample = in.sample.to(device, dtype);
    in.timesteps = in.timesteps.to(device);
    in.encoder_hidden_states = in.encoder_hidden_states.to(device, dtype);
    if (in.text_embeds.defined()) in.text_embeds = in.text_embeds.to(device, dtype);
    if (in.time_ids.defined()) in.time_ids = in.time_ids.to(device);
    if (channels_last) {
      torch::NoGradGuard no_grad;
      for (auto& p : unet->parameters()) {
        if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
      }
      in.sample = in.sample.contiguous(at::MemoryFormat::ChannelsLast);
    }

    at::Tensor cotangent;
    if (backward) {
      if (!inputs_path.empty()) {
        auto file = concord::io::load_safetensors(inputs_path);
        if (file.count("cotangent")) cotangent = file.at("cotangent").to(device, dtype);
      }
      if (!cotangent.defined()) {
        auto gen = at::detail::createCPUGenerator(1);
        cotangent = at::randn(in.sample.sizes(), gen).to(device, dtype);
      }
    }
    // A forward, or with --backward a forward and backward under autograd (the parameters'
    // gradients reset first, as an optimizer's zero_grad(set_to_none) does).
    auto call = [&]() -> at::Tensor {
      if (!backward) {
        c10::InferenceMode inference;
        return unet->forward(in);
      }
      for (auto& p : unet->parameters()) p.mutable_grad() = at::Tensor();
      at::Tensor y = unet->forward(in);
      y.backward(cotangent);
      return y.detach();
    };
    at::Tensor out;
    for (int i = 0; i < warmup; ++i) out = call();
    concord::bench::sync(device);
    concord::bench::OpProfile prof;
    if (profile) prof.start();
    std::vector<double> times;
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      out = call();
      concord::bench::sync(device);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    prof.stop();
    std::vector<double> sorted = times;
    std::sort(sorted.begin(), sorted.end());
    const double mean = std::accumulate(times.begin(), times.end(), 0.0) / times.size();
    if (!output_path.empty()) {
      std::map<std::string, at::Tensor> written{
          {"sample_out", out.to(at::kCPU, at::kFloat).contiguous()}};
      if (backward) {
        const auto params = unet->named_parameters();
        for (const char* name : kGradientsWritten) {
          const at::Tensor* p = params.find(name);
          if (p != nullptr && p->grad().defined()) {
            written[std::string("grad.") + name] = p->grad().to(at::kCPU, at::kFloat).contiguous();
          }
        }
      }
      concord::io::save_safetensors(output_path, written);
    }
    nlohmann::json result = {{"seconds_per_forward", sorted[sorted.size() / 2]},
                             {"min_seconds", sorted.front()},
                             {"mean_seconds", mean},
                             {"peak_rss_bytes", status_bytes("VmHWM")},
                             {"parameters", unet->num_parameters()},
                             {"load_seconds", load_s},
                             {"batch", in.sample.size(0)},
                             {"latent", in.sample.size(2)},
                             {"text_length", in.encoder_hidden_states.size(1)},
                             {"dtype", dtype_name},
                             {"channels_last", channels_last},
                             {"direct_conv", direct_conv},
                             {"backward", backward},
                             {"threads", at::get_num_threads()},
                             {"device", device_name},
                             {"libtorch", TORCH_VERSION}};
    if (device.is_cuda()) result["peak_device_bytes"] = concord::bench::cuda_peak_allocated_bytes();
    if (profile) {
      nlohmann::json ops = nlohmann::json::object();
      for (const auto& [name, ms] : prof.self_ms("")) {
        ops[name] = {{"ms_per_forward", ms / iters},
                     {"calls_per_forward", prof.calls("", name) / iters}};
      }
      result["profile"] = ops;
    }
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_unet: %s\n", e.what());
    return 1;
  }
  return 0;
}
