// Loading the model a run config names, shared by the tasks that evaluate or score a causal
// LM (tumlu, diversity, grape): a Hugging Face model folder, or a model config file with
// optional weights.
#pragma once
#include <string>

#include <c10/core/Device.h>

#include "concord/lm/causal_lm.h"

namespace concord::tasks {

/// `model` is a Hugging Face model folder (config.json + safetensors; `weights` must be empty),
/// or a model config file (Concord's or a config.json) with `weights` (a .safetensors, an
/// index, or a folder; empty: fresh weights drawn from the run's seed, for smoke runs). `task`
/// names the caller in errors. The model is returned on `device`, in eval mode. A missing model
/// is an IoError; a LibTorch error while loading (a device it cannot reach) a TorchError.
lm::CausalLM load_model(const std::string& model, const std::string& weights, c10::Device device,
                        const std::string& task);

/// The tokenizer a model's run uses: `tokenizer` when given (a file, a folder or "bytes"),
/// else the model folder; a model config file without `tokenizer` is an error naming `task`.
std::string tokenizer_path_for(const std::string& model, const std::string& tokenizer,
                               const std::string& task);

/// A short name for a model path: a file's stem ("tiny-llama" for
/// configs/models/tiny-llama.json), a folder's whole name ("Qwen2-0.5B" for /models/Qwen2-0.5B/).
std::string model_display_name(const std::string& model);

}  // namespace concord::tasks
