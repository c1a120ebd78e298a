// Peak resident memory of loading an 8B-parameter bf16 checkpoint and running it, against the
// checkpoint's size: the figure that says whether load_pretrained keeps one copy of the weights
// in memory (ratio ~1) or two (~2) or more.
//
// 1. Unless DIR already holds it, a child process (this program with --write-only, so the
//    writing's memory never counts against the measured process) writes a random checkpoint
//    shaped like Llama-3-8B (vocabulary 128256, width 4096, 32 layers, 32 query / 8 kv heads
//    of 128, SwiGLU 14336, untied head, llama3 RoPE scaling) in bf16, sharded at 5 GB as
//    transformers' save_pretrained shards it: 8.03e9 parameters, 16.06 GB. Weights are
//    N(0, 0.02) values (norm scales 1), cut from one random pool so writing costs no 8e9
//    draws.
// 2. This process loads it with load_pretrained (bf16, CPU, map_weights on), scores a
//    continuation (score_continuations) and greedily generates a few tokens (generate), then
//    prints one JSON line: the checkpoint's bytes, VmHWM (peak resident set) and the ratio
//    VmHWM / bytes, the resident set split into file-backed (the mapped weights) and anonymous
//    (the fused q|k|v and gate|up copies, activations, LibTorch) after each step, and the time
//    of each step.
// 3. DIR is deleted afterwards unless --keep.
//
// Usage: bench_load_mapped [--dir /tmp/concord-llama3-8b] [--keep] [--prompt 4] [--score 2]
//                          [--new-tokens 2] [--layers 32] [--no-map | --baseline]
// --layers shrinks the model (at 32 layers the --baseline path needs more than 32 GB: its
// fp32 initialisation alone is 4 bytes a parameter). --no-map loads with map_weights off (every parameter read into memory
// of its own). --baseline loads the way load_pretrained did before it mapped anything, through
// the public API that remains: CausalLM(config) with its random fp32 initialisation, ->to(bf16),
// then load_hf_state_dict copying from the mapped tensors.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/runtime.h"
#include "concord/io/safetensors_sharded.h"
#include "concord/lm/generate.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/lm/score.h"

#include "bench_flags.h"
#include "bench_memory.h"

extern char** environ;

namespace fs = std::filesystem;

using concord::bench::status_bytes;

namespace {

// Llama-3-8B's config.json (meta-llama/Meta-Llama-3.1-8B), with `layers` blocks.
concord::Json llama3_8b_config(int64_t layers) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"dtype", "bfloat16"},
      {"vocab_size", 128256},
      {"hidden_size", 4096},
      {"intermediate_size", 14336},
      {"num_hidden_layers", layers},
      {"num_attention_heads", 32},
      {"num_key_value_heads", 8},
      {"head_dim", 128},
      {"max_position_embeddings", 131072},
      {"rms_norm_eps", 1e-5},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"bos_token_id", 128000},
      {"eos_token_id", 128001},
      {"rope_theta", 500000.0},
      {"rope_scaling",
       {{"rope_type", "llama3"},
        {"factor", 8.0},
        {"low_freq_factor", 1.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 8192}}},
  };
}

void write_checkpoint(const fs::path& dir, int64_t layers) {
  const int64_t V = 128256, d = 4096, I = 14336, q = 32 * 128, kv = 8 * 128;
  std::map<std::string, std::vector<int64_t>> shapes;
  shapes["model.embed_tokens.weight"] = {V, d};
  shapes["lm_head.weight"] = {V, d};
  shapes["model.norm.weight"] = {d};
  for (int64_t i = 0; i < layers; ++i) {
    const std::string l = "model.layers." + std::to_string(i) + ".";
    shapes[l + "input_layernorm.weight"] = {d};
    shapes[l + "post_attention_layernorm.weight"] = {d};
    shapes[l + "self_attn.q_proj.weight"] = {q, d};
    shapes[l + "self_attn.k_proj.weight"] = {kv, d};
    shapes[l + "self_attn.v_proj.weight"] = {kv, d};
    shapes[l + "self_attn.o_proj.weight"] = {d, q};
    shapes[l + "mlp.gate_proj.weight"] = {I, d};
    shapes[l + "mlp.up_proj.weight"] = {I, d};
    shapes[l + "mlp.down_proj.weight"] = {d, I};
  }
  // Every matrix is a contiguous window of one random pool at its own offset (the writer
  // streams contiguous tensors without copying them), the norm scales a shared vector of ones.
  torch::manual_seed(0);
  const int64_t slack = 1 << 20;
  const at::Tensor pool = (torch::randn({V * d + slack}) * 0.02).to(at::kBFloat16);
  const at::Tensor ones = torch::ones({d}, at::kBFloat16);
  std::map<std::string, at::Tensor> tensors;
  int64_t k = 0;
  for (const auto& [name, shape] : shapes) {
    if (shape.size() == 1) {
      tensors[name] = ones;
      continue;
    }
    const int64_t offset = (k++ * 7919) % slack;
    tensors[name] = pool.narrow(0, offset, shape[0] * shape[1]).view(shape);
  }
  fs::create_directories(dir);
  concord::io::save_safetensors_sharded(dir, tensors, uint64_t{5} << 30);
  concord::write_file_atomic(dir / "config.json", llama3_8b_config(layers).dump(2) + "\n");
}

double gb(int64_t bytes) { return static_cast<double>(bytes) / 1e9; }

std::string memory_json() {
  char buf[256];
  std::snprintf(buf, sizeof buf, "{\"rss_gb\": %.3f, \"rss_file_gb\": %.3f, \"rss_anon_gb\": %.3f, \"hwm_gb\": %.3f}",
                gb(status_bytes("VmRSS")), gb(status_bytes("RssFile")), gb(status_bytes("RssAnon")),
                gb(status_bytes("VmHWM")));
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir_flag = "/tmp/concord-llama3-8b";
  bool keep = false, write_only = false, map_weights = true, baseline = false;
  int64_t prompt_len = 4, score_len = 2, new_tokens = 2, layers = 32;
  concord::bench::Flags flags("bench_load_mapped");
  flags.add("dir", &dir_flag).on("keep", &keep).on("write-only", &write_only)
      .on("no-map", &map_weights, false).on("baseline", &baseline).add("prompt", &prompt_len)
      .add("score", &score_len).add("new-tokens", &new_tokens).add("layers", &layers);
  if (!flags.parse(argc, argv)) return 2;
  const fs::path dir = dir_flag;
  try {
    concord::init_runtime();
    if (write_only) {
      write_checkpoint(dir, layers);
      return 0;
    }
    const bool wrote = !fs::exists(dir / "config.json");
    double write_s = 0;
    if (wrote) {
      auto t0 = std::chrono::steady_clock::now();
      const std::string self = fs::read_symlink("/proc/self/exe").string();
      const std::string layers_s = std::to_string(layers);
      std::vector<std::string> args = {self, "--write-only", "--dir", dir.string(), "--layers", layers_s};
      std::vector<char*> cargv;
      for (auto& s : args) cargv.push_back(s.data());
      cargv.push_back(nullptr);
      pid_t pid = 0;
      if (posix_spawn(&pid, self.c_str(), nullptr, nullptr, cargv.data(), environ) != 0) {
        concord::fail("cannot start the checkpoint writer");
      }
      int status = 0;
      waitpid(pid, &status, 0);
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) concord::fail("the checkpoint writer failed");
      write_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    int64_t bytes = 0;
    int shards = 0;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".safetensors") {
        bytes += static_cast<int64_t>(e.file_size());
        ++shards;
      }
    }
    using clock = std::chrono::steady_clock;
    const std::string before = memory_json();
    auto t0 = clock::now();
    concord::lm::LoadOptions options;
    options.dtype = at::kBFloat16;
    options.map_weights = map_weights;
    concord::lm::CausalLM model(nullptr);
    if (baseline) {
      const fs::path index = dir / concord::io::kSafetensorsIndexName;
      const fs::path weights = fs::exists(index) ? index : dir / "model.safetensors";
      const auto tensors = concord::io::load_safetensors_checkpoint(weights);
      model = concord::lm::CausalLM(concord::lm::load_any_model_config(dir));
      model->to(at::kBFloat16);
      concord::lm::load_hf_state_dict(model, tensors, weights.string());
      model->eval();
    } else {
      model = concord::lm::load_pretrained(dir, options);
    }
    const double load_s = std::chrono::duration<double>(clock::now() - t0).count();
    const std::string after_load = memory_json();

    std::vector<int64_t> prompt, continuation;
    for (int64_t i = 0; i < prompt_len; ++i) prompt.push_back(1000 + 37 * i);
    for (int64_t i = 0; i < score_len; ++i) continuation.push_back(2000 + 53 * i);
    t0 = clock::now();
    const auto score = concord::lm::score_continuations(model, {prompt}, {continuation})[0];
    const double score_s = std::chrono::duration<double>(clock::now() - t0).count();
    const std::string after_score = memory_json();

    concord::lm::GenerationOptions g;
    g.max_new_tokens = new_tokens;
    t0 = clock::now();
    const auto gen = concord::lm::generate(model, {prompt}, g)[0];
    const double generate_s = std::chrono::duration<double>(clock::now() - t0).count();
    const std::string after_generate = memory_json();
    const int64_t hwm = status_bytes("VmHWM");

    std::string tokens;
    for (auto t : gen.tokens) tokens += (tokens.empty() ? "" : ", ") + std::to_string(t);
    std::printf(
        "{\"parameters\": %lld, \"checkpoint_gb\": %.3f, \"shards\": %d, \"mode\": \"%s\", "
        "\"peak_rss_gb\": %.3f, \"peak_rss_over_checkpoint\": %.3f, \"write_s\": %.1f, "
        "\"load_s\": %.2f, \"score_s\": %.2f, \"score_tokens\": %lld, \"score_mean_logprob\": %.4f, "
        "\"generate_s\": %.2f, \"generated\": [%s], \"prompt_tokens\": %lld, "
        "\"threads\": %d,\n \"memory\": {\"start\": %s,\n  \"loaded\": %s,\n  \"scored\": %s,\n  "
        "\"generated\": %s}}\n",
        static_cast<long long>(model->num_parameters()), gb(bytes), shards,
        baseline ? "baseline" : map_weights ? "mapped" : "copied", gb(hwm), static_cast<double>(hwm) / static_cast<double>(bytes),
        write_s, load_s, score_s, static_cast<long long>(score_len), score.mean, generate_s,
        tokens.c_str(), static_cast<long long>(prompt_len), at::get_num_threads(), before.c_str(),
        after_load.c_str(), after_score.c_str(), after_generate.c_str());
    model = concord::lm::CausalLM(nullptr);
    if (!keep) fs::remove_all(dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", concord::one_line_message(e).c_str());
    if (!keep && !write_only) fs::remove_all(dir);
    return 1;
  }
  return 0;
}
