// What the fault tests share: tiny inputs for every training task and the polling of a run
// folder's checkpoints.
#pragma once
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include <torch/torch.h>

#include "concord/core/files.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/tasks/tasks.h"
#include "test_support.h"

namespace concord::testing {

/// The step `run/checkpoints/latest` names (step-00000012 -> 12), or -1 when there is none yet.
inline int64_t latest_step(const std::filesystem::path& run) {
  std::error_code ec;
  const auto pointer = run / "checkpoints" / "latest";
  if (!std::filesystem::exists(pointer, ec)) return -1;
  std::string name;
  try {
    name = read_file(pointer);
  } catch (const std::exception&) {
    return -1;
  }
  const auto dash = name.find('-');
  if (dash == std::string::npos) return -1;
  try {
    return std::stoll(name.substr(dash + 1));
  } catch (const std::exception&) {
    return -1;
  }
}

/// Polls every millisecond until `done()` or `seconds` pass; returns whether done() held.
template <typename F>
bool wait_until(F&& done, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return done();
}

// Inputs for every training task: a tiny byte-level GPT-2 folder, SFT records, preference pairs
// of 6 users, prompts, and a reward model trained on the pairs (for ppo).
struct Inputs {
  TempDir tmp;
  std::filesystem::path base, sft, pairs, prompts, reward;

  Inputs() {
    torch::manual_seed(0);
    concord::lm::CausalLM m(concord::lm::load_model_config(::concord::testing::source_dir().string() +
                                                           "/configs/models/tiny-gpt2.json"));
    base = tmp / "base";
    concord::lm::save_pretrained(m, base);
    std::string sft_lines, pair_lines, prompt_lines;
    for (int i = 0; i < 24; ++i) {
      const std::string q = "q" + std::to_string(i);
      sft_lines += "{\"prompt\": \"" + q + "=\", \"completion\": \" " + std::to_string(i * 7) + "\"}\n";
      pair_lines += "{\"prompt\":\"" + q + "\",\"chosen\":\"" + std::string(1 + i % 4, 'x') +
                    "\",\"rejected\":\"" + std::string(1 + i % 3, 'y') + "\",\"user\":\"u" +
                    std::to_string(i % 6) + "\"}\n";
      prompt_lines += "{\"prompt\":\"" + q + "\"}\n";
    }
    sft = write_file(tmp / "sft.jsonl", sft_lines);
    pairs = write_file(tmp / "pairs.jsonl", pair_lines);
    prompts = write_file(tmp / "prompts.jsonl", prompt_lines);
    const std::string r = concord::tasks::run_task(
        R"({"task": "reward", "model": ")" + base.string() + R"(", "tokenizer": "bytes",
            "data": ")" + pairs.string() + R"(", "batch_size": 4,
            "train": {"max_steps": 2, "lr": 1e-3, "progress": false}})",
        {}, (tmp / "reward-run").string());
    reward = std::filesystem::path(r) / "reward";
  }
};

}  // namespace concord::testing
