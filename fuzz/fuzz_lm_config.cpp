// libFuzzer target for the files of a language-model folder other than the weights themselves:
//   - config.json: the input is written into a scratch model folder and read by
//     lm::load_any_model_config (a Hugging Face config.json when it has "model_type": gpt2,
//     llama, mistral, qwen2, olmo2, pangu_pi; else a Concord model config). An accepted config
//     must pass validate(), survive both round trips (model_config_to_hf -> model_config_from_hf
//     and model_config_to_json -> model_config_from_json) unchanged, and have a positive
//     parameter count equal to the sum of count_parameters_by_module; one small enough (at most
//     kMaxBuilt parameters) is built as a CausalLM, whose parameter count must match, and run on
//     three tokens, so a config that validate() passes but a module refuses is found too.
//   - model.safetensors.index.json: the same input is read by io::ShardedSafetensors beside one
//     small shard, model-00001-of-00001.safetensors (tensors "a" and "b"); an index that opens
//     must name only tensors the shard holds, each readable.
// A bad file must end in concord::Error (one line, naming the file: for the index, the index or
// the shard it names); a crash, another exception
// (c10::Error, nlohmann's), a sanitizer report (a signed overflow in a parameter count), a hang
// or an allocation beyond the fuzzer's limit is a bug.
// Seeds: fuzz/corpus/lm_config (the fixture models' config.json files, configs/models' Concord
// configs, transformers' layouts of each family, an index); dictionary: lm_config.dict.
// Build and run: scripts/fuzz.sh 60 fuzz_lm_config
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "concord/core/error.h"
#include "concord/io/safetensors.h"
#include "concord/io/safetensors_sharded.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;
namespace cl = concord::lm;

namespace {

constexpr int64_t kMaxBuilt = 200'000;

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

void check_message(const concord::Error& e, const fs::path& file) {
  const std::string what = e.what();
  check(what.find('\n') == std::string::npos, "message spans lines:", what);
  check(what.find(file.string()) != std::string::npos, "message names no file:", what);
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

const fs::path& model_dir() {
  static const fs::path dir = [] {
    static const concord::fuzz::Scratch scratch("fuzz_lm_config");
    concord::io::save_safetensors(scratch.dir / "model-00001-of-00001.safetensors",
                                  {{"a", at::arange(6, at::kFloat).reshape({2, 3})},
                                   {"b", at::ones({1}, at::kLong)}});
    return scratch.dir;
  }();
  return dir;
}

void fuzz_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  cl::ModelConfig config;
  try {
    config = cl::load_any_model_config(dir);
  } catch (const concord::Error& e) {
    check_message(e, file);
    return;
  }
  config.validate("accepted");
  const std::string resolved = cl::model_config_to_json(config).dump();
  const std::string again =
      cl::model_config_to_json(cl::model_config_from_json(cl::model_config_to_json(config), "json"))
          .dump();
  check(again == resolved, "Concord JSON round trip changed the config:", resolved + " -> " + again);
  const std::string from_hf =
      cl::model_config_to_json(cl::model_config_from_hf(cl::model_config_to_hf(config), "hf")).dump();
  check(from_hf == resolved, "config.json round trip changed the config:", resolved + " -> " + from_hf);

  const int64_t total = cl::count_parameters(config);
  check(total > 0, "parameter count not positive");
  int64_t sum = 0;
  for (const auto& [name, n] : cl::count_parameters_by_module(config)) {
    check(n >= 0, "negative parameter count for", name);
    sum += n;
  }
  check(sum == total, "count_parameters_by_module does not sum to count_parameters");
  if (total > kMaxBuilt || config.max_position_embeddings < 3) return;
  cl::CausalLM model(config);
  int64_t built = 0;
  for (const auto& p : model->parameters()) built += p.numel();
  check(built == total, "the built model's parameter count differs:",
        std::to_string(built) + " vs " + std::to_string(total));
  at::NoGradGuard no_grad;
  const at::Tensor ids = at::arange(3, at::kLong).remainder(config.vocab_size).unsqueeze(0);
  const at::Tensor logits = model->forward(ids);
  check(logits.dim() == 3 && logits.size(0) == 1 && logits.size(1) == 3 &&
            logits.size(2) == config.vocab_size,
        "logits shape");
}

void fuzz_index(const fs::path& dir) {
  const fs::path file = dir / concord::io::kSafetensorsIndexName;
  try {
    const concord::io::ShardedSafetensors shards(file);
    for (const auto& key : shards.keys()) {
      check(key == "a" || key == "b", "index names a tensor the shard lacks:", key);
      check(shards.get(key).defined(), "undefined tensor");
    }
    (void)shards.total_size();
  } catch (const concord::Error& e) {
    check_message(e, dir);  // the index or the shard it names (ShardedSafetensors' contract)
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = model_dir();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  write(dir / "config.json", input);
  write(dir / concord::io::kSafetensorsIndexName, input);
  fuzz_config(dir);
  fuzz_index(dir);
  return 0;
}
