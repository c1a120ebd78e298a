#include "concord/tasks/model_loading.h"

#include <filesystem>

#include "concord/core/error.h"
#include "concord/io/safetensors_sharded.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

lm::CausalLM load_model_impl(const std::string& model, const std::string& weights,
                             c10::Device device, const std::string& task) {
  lm::LoadOptions lo;
  lo.device = device;
  if (fs::is_directory(model)) {
    CONCORD_CHECK(weights.empty(), task, ": 'weights' is for a model config file; '", model,
                  "' is a folder that holds its own weights");
    return lm::load_pretrained(model, lo);
  }
  if (!fs::is_regular_file(model)) {
    fail_io(model, "no such model folder or model config file (", task, ": key 'model')");
  }
  lm::CausalLM m(lm::load_any_model_config(model));
  if (!weights.empty()) lm::load_hf_state_dict(m, io::load_safetensors_checkpoint(weights), weights);
  m->to(device);
  m->eval();
  return m;
}

}  // namespace

lm::CausalLM load_model(const std::string& model, const std::string& weights, c10::Device device,
                        const std::string& task) {
  return translate_torch_errors(task + ": loading model " + model,
                                [&] { return load_model_impl(model, weights, device, task); });
}

std::string tokenizer_path_for(const std::string& model, const std::string& tokenizer,
                               const std::string& task) {
  if (!tokenizer.empty()) return tokenizer;
  CONCORD_CHECK(fs::is_directory(model), task, ": give 'tokenizer' (a file, a folder or 'bytes') "
                "for the model config file '", model, "'");
  return model;
}

std::string model_display_name(const std::string& model) {
  fs::path p = fs::path(model).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();  // "dir/" -> "dir"
  // A folder keeps its whole name (a dot in "Qwen2-0.5B" is not an extension).
  return fs::is_directory(p) ? p.filename().string() : p.stem().string();
}

}  // namespace concord::tasks
