// libFuzzer target for Concord's training checkpoints (train::load_checkpoint): the input is a
// checkpoint's training_state.safetensors (its metadata: concord.magic, concord.version and the
// concord.state JSON; its tensors: AdamW's moments and steps and the CPU RNG state). It is
// written into a scratch checkpoint folder beside a valid modules/model.safetensors for a fixed
// module (a Linear(3, 2) named "model") and loaded into that module and an AdamW over it. Bad
// input must end in concord::Error (one line, naming the state file); a crash, another
// exception, a sanitizer report, a hang or an allocation beyond the input's size is a bug. A
// checkpoint that loads must be usable: one AdamW step on it runs (so a forged step count that
// would overflow, or moments of the wrong dtype, are the loader's to refuse).
//
// Findings fixed (each has a regression_* input in the corpus): the saved RNG state went to
// LibTorch's CPUGeneratorImpl::set_state unchecked (a c10::Error naming no file); a float step
// count beyond int64 escaped as std::runtime_error; any step count was kept (INT64_MAX overflows
// at the next step, a negative one inverts the bias correction); a refused checkpoint left the
// modules half-loaded.
//
// Seeds (fuzz/corpus/checkpoint) are real state files and regression_* variants crafted from them
// (what a hostile or corrupt state can claim); this target writes them all itself:
//   CONCORD_FUZZ_WRITE_SEEDS=fuzz/corpus/checkpoint build/fuzz/replay_fuzz_checkpoint
// Build and run: scripts/fuzz.sh 60 fuzz_checkpoint
#include <c10/util/Exception.h>
#include <torch/nn/modules/linear.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <string_view>

#include "concord/core/error.h"
#include "concord/io/safetensors.h"
#include "concord/train/adamw.h"
#include "concord/train/checkpoint.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;
namespace ct = concord::train;

namespace {

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

struct Model {
  torch::nn::Linear linear{torch::nn::LinearOptions(3, 2)};
  std::vector<ct::NamedModule> modules() const { return {{"model", linear.ptr()}}; }
  ct::AdamW optimizer() const {
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (const auto& p : linear->named_parameters()) params.emplace_back(p.key(), p.value());
    return ct::AdamW(std::move(params), ct::AdamWOptions());
  }
};

// Real checkpoints of the fuzzed module (a fresh one, with no optimizer state, and one after three
// steps), and crafted variants of the second: what a hostile or corrupt state file can claim.
void write_seeds(const fs::path& out) {
  concord::fuzz::Scratch tmp("fuzz_checkpoint_seeds");
  Model model;
  ct::AdamW opt = model.optimizer();
  ct::TrainingState state;
  state.data = {{"epoch", 0}, {"cursor", 0}};
  fs::create_directories(out);
  const std::string kState = "training_state.safetensors";
  fs::copy_file(ct::save_checkpoint(tmp.dir, model.modules(), opt, state) / kState, out / "fresh",
                fs::copy_options::overwrite_existing);
  for (int i = 0; i < 3; ++i) {
    model.linear->forward(torch::ones({1, 3})).sum().backward();
    opt.step();
    opt.zero_grad();
  }
  state.step = 3;
  state.data = {{"epoch", 1}, {"cursor", 17}};
  state.extra = {{"eval", {{"loss", 2.5}}}};
  const fs::path saved = ct::save_checkpoint(tmp.dir, model.modules(), opt, state) / kState;
  fs::copy_file(saved, out / "after_3_steps", fs::copy_options::overwrite_existing);

  const concord::io::SafetensorsFile file(saved);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& key : file.keys()) tensors[key] = file.get(key).clone();
  const std::map<std::string, std::string> meta = file.metadata();
  auto variant = [&](const std::string& name, auto&& edit) {
    auto t = tensors;
    auto m = meta;
    edit(t, m);
    concord::io::save_safetensors(out / ("regression_" + name), t, m);
  };
  using Tensors = std::map<std::string, at::Tensor>;
  using Meta = std::map<std::string, std::string>;
  variant("rng_state_10_bytes", [](Tensors& t, Meta&) { t["__rng.cpu"] = at::zeros({10}, at::kByte); });
  variant("rng_state_int32", [](Tensors& t, Meta&) { t["__rng.cpu"] = at::zeros({1264}, at::kInt); });
  variant("rng_state_unseeded", [](Tensors& t, Meta&) { t["__rng.cpu"] = at::zeros_like(t["__rng.cpu"]); });
  variant("moment_shape_swapped", [](Tensors& t, Meta&) { t["weight.exp_avg"] = t["weight.exp_avg"].t().contiguous(); });
  variant("moment_bool", [](Tensors& t, Meta&) { t["weight.exp_avg"] = t["weight.exp_avg"].gt(0); });
  variant("step_int64_max", [](Tensors& t, Meta&) {
    t["weight.step"] = at::scalar_tensor(std::numeric_limits<int64_t>::max(), at::kLong);
  });
  variant("step_negative", [](Tensors& t, Meta&) { t["weight.step"] = at::scalar_tensor(-5, at::kLong); });
  variant("step_float_1e30", [](Tensors& t, Meta&) { t["weight.step"] = at::scalar_tensor(1e30, at::kDouble); });
  variant("step_not_scalar", [](Tensors& t, Meta&) { t["weight.step"] = at::ones({2}, at::kLong); });
  variant("unknown_optimizer_entry", [](Tensors& t, Meta&) { t["other.exp_avg"] = at::ones({1}); });
  variant("modules_mismatch", [](Tensors&, Meta& m) {
    m["concord.state"] = R"({"step":3,"modules":["model","value_head"],"data":null})";
  });
  variant("module_path_escape", [](Tensors&, Meta& m) {
    m["concord.state"] = R"({"step":3,"modules":["../model"],"data":null})";
  });
  variant("state_not_json", [](Tensors&, Meta& m) { m["concord.state"] = "{\"step\":"; });
  variant("step_not_integer", [](Tensors&, Meta& m) { m["concord.state"] = R"({"step":"3","modules":["model"]})"; });
  variant("version_1", [](Tensors&, Meta& m) { m["concord.version"] = "1"; });
  variant("version_huge", [](Tensors&, Meta& m) { m["concord.version"] = "99999999999999999999"; });
  variant("magic_wrong", [](Tensors&, Meta& m) { m["concord.magic"] = "concord-training-statf"; });
  // A header that claims a 1 TB moment in a file of a few hundred bytes.
  const std::string header =
      R"({"__metadata__":{"concord.magic":"concord-training-state","concord.version":"2",)"
      R"("concord.state":"{\"step\":3,\"modules\":[\"model\"]}"},)"
      R"("weight.exp_avg":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}})";
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write(out / "regression_tensor_claims_1tb", bytes + header + std::string(16, '\0'));
}

// The scratch checkpoint folder, its modules/ written once from a fresh module.
const fs::path& checkpoint_dir() {
  static const fs::path dir = [] {
    if (const char* seeds = std::getenv("CONCORD_FUZZ_WRITE_SEEDS")) write_seeds(seeds);
    static const concord::fuzz::Scratch scratch("fuzz_checkpoint");
    const fs::path d = scratch.dir / "step-00000001";
    fs::create_directories(d / "modules");
    Model model;
    std::map<std::string, at::Tensor> tensors;
    for (const auto& p : model.linear->named_parameters()) tensors[p.key()] = p.value();
    concord::io::save_safetensors(d / "modules" / "model.safetensors", tensors);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = checkpoint_dir();
  const fs::path state_file = dir / "training_state.safetensors";
  write(state_file, std::string_view(reinterpret_cast<const char*>(data), size));
  Model model;
  ct::AdamW opt = model.optimizer();
  ct::TrainingState state;
  const at::Tensor before = model.linear->weight.detach().clone();
  try {
    state = ct::load_checkpoint(dir, model.modules(), opt);
  } catch (const concord::Error& e) {
    const std::string what = e.what();
    check(what.find('\n') == std::string::npos, "message spans lines:", what);
    check(what.find(dir.string()) != std::string::npos, "message names no file:", what);
    // A refused checkpoint changes nothing.
    check(at::equal(before, model.linear->weight), "a refused checkpoint changed the module");
    check(opt.state_dict().empty(), "a refused checkpoint changed the optimiser");
    return 0;
  }
  (void)state.data.dump();
  (void)state.extra.dump();
  // The loaded state must be usable.
  model.linear->forward(torch::ones({1, 3})).sum().backward();
  opt.step();
  return 0;
}
