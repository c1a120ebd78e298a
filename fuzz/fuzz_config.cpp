// libFuzzer target: run-config parsing. The input's first line is a `--set` override, the rest a
// JSON config; both go through parse_json, apply_override and ConfigSchema::resolve against a
// schema with every key type, a choice and a nested section. Any concord::Error with a one-line
// message is an accepted rejection; anything else (a crash, another exception, a sanitizer
// report, a message split by a newline from the file) is a bug.
// Build and run: scripts/fuzz.sh 60 fuzz_config
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "concord/core/config.h"
#include "concord/core/error.h"

namespace {

const concord::ConfigSchema& schema() {
  static const concord::ConfigSchema s = [] {
    concord::ConfigSchema optim;
    optim.optional("learning_rate", concord::ConfigType::Float, 3e-4, "lr")
        .choice("schedule", {"cosine", "linear"}, "cosine", "schedule")
        .optional("betas", concord::ConfigType::Array, concord::Json::array({0.9, 0.95}), "betas");
    concord::ConfigSchema run;
    run.required("task", concord::ConfigType::String, "task")
        .optional("steps", concord::ConfigType::Int, 10, "steps")
        .optional("bf16", concord::ConfigType::Bool, false, "bf16")
        .optional("extra", concord::ConfigType::Object, concord::Json::object(), "free-form")
        .optional("anything", concord::ConfigType::Any, nullptr, "any")
        .section("optimizer", optim, "optimizer");
    return run;
  }();
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string override_text = nl == std::string::npos ? std::string() : input.substr(0, nl);
  const std::string json_text = nl == std::string::npos ? input : input.substr(nl + 1);
  try {
    concord::Json config = concord::parse_json(json_text, "fuzz.json");
    if (!override_text.empty() && config.is_object()) {
      concord::apply_override(config, override_text, schema());
    }
    concord::Json resolved = schema().resolve(config, "fuzz.json");
    (void)resolved.dump();
    (void)schema().describe().dump();
  } catch (const concord::Error& e) {
    // A refusal is one line, whatever the keys and values hold.
    const std::string what = e.what();
    if (what.find('\n') != std::string::npos) {
      std::fprintf(stderr, "invariant violated: message spans lines: %s\n", what.c_str());
      std::abort();
    }
  }
  return 0;
}
