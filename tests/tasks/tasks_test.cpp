// The tasks layer as a program embedding Concord uses it: run_task from a file or from JSON
// text, and the kinds of concord::Error that reach the caller.
#include <gtest/gtest.h>

#include <string>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"
#include "concord/lm/model_config.h"
#include "concord/lm/score.h"
#include "concord/tasks/model_loading.h"
#include "concord/tasks/tasks.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::tasks::run_task;

namespace {

template <typename E>
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

std::string tiny_model() { return ::concord::testing::source_dir().string() + "/configs/models/tiny-gpt2.json"; }

}  // namespace

TEST(Tasks, RunTaskFromJsonTextWritesTheRunFolder) {
  concord::testing::TempDir tmp;
  const auto corpus =
      concord::testing::write_file(tmp / "c.jsonl", "{\"text\": \"ab\"}\n{\"text\": \"c\"}\n");
  const std::string config = "  {\"task\": \"tokenize\", \"input\": \"" + corpus.string() +
                             "\", \"tokens_per_shard\": 4}";
  const std::string dir = run_task(config, {"seed=7"}, (tmp / "run").string());
  EXPECT_EQ(dir, (tmp / "run").string());
  const auto resolved = concord::load_json_file(tmp / "run/config.json");
  EXPECT_EQ(resolved["seed"], 7);
  EXPECT_EQ(resolved["tokenizer"], "bytes");  // the default, declared once in the task's options
  EXPECT_EQ(resolved["shard_prefix"], "shards/train");
  const auto metrics = concord::read_metrics(tmp / "run/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 1u);
  EXPECT_EQ(metrics[0]["data/tokens"], 5);  // a b EOS c EOS
  EXPECT_EQ(metrics[0]["data/shards"], 2);  // 4 + 1 tokens
  EXPECT_TRUE(fs::exists(tmp / "run/report.md"));

  // The same config from a file gives the same resolved config.
  const auto file = concord::testing::write_file(tmp / "tok.json", config);
  run_task(file.string(), {"seed=7"}, (tmp / "run2").string());
  auto again = concord::load_json_file(tmp / "run2/config.json");
  again["out_dir"] = resolved["out_dir"];
  EXPECT_EQ(again, resolved);
}

TEST(Tasks, ABadConfigKeyIsAConfigErrorNamingFileAndKey) {
  concord::testing::TempDir tmp;
  const auto cfg = concord::testing::write_file(
      tmp / "typo.json", R"({"task": "tokenize", "input": "x.jsonl", "tokens_per_shrad": 5})");
  std::string m = error_of<concord::ConfigError>([&] { run_task(cfg.string(), {}, (tmp / "r").string()); });
  EXPECT_NE(m.find(cfg.string() + ": unknown key 'tokens_per_shrad' (did you mean "
                                  "'tokens_per_shard'?)"),
            std::string::npos)
      << m;
  // A value outside its declared range, from the file or from an override.
  const auto zero = concord::testing::write_file(
      tmp / "zero.json", R"({"task": "tokenize", "input": "x.jsonl", "tokens_per_shard": 0})");
  m = error_of<concord::ConfigError>([&] { run_task(zero.string(), {}, (tmp / "r").string()); });
  EXPECT_NE(m.find("zero.json: key 'tokens_per_shard': must be >= 1, got 0"), std::string::npos) << m;
  m = error_of<concord::ConfigError>(
      [&] { run_task(cfg.string(), {"tokens_per_shard=-1"}, (tmp / "r").string()); });
  EXPECT_NE(m.find("--set tokens_per_shard=-1"), std::string::npos) << m;
  // A value outside a task's choices: the grape task's selection mode.
  m = error_of<concord::ConfigError>([&] {
    run_task(R"({"task": "grape", "model": "m.json", "pool": "p.jsonl", "mode": "best"})");
  });
  EXPECT_NE(m.find("run config: key 'mode': 'best' is not one of: "), std::string::npos) << m;
  // An unknown task.
  m = error_of<concord::ConfigError>([&] { run_task(R"({"task": "dance"})"); });
  EXPECT_NE(m.find("unknown task 'dance' (valid: "), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(tmp / "r"));  // nothing ran
}

TEST(Tasks, MissingFilesAreIoErrorsAndPlannedTasksUnsupported) {
  concord::testing::TempDir tmp;
  std::string m = error_of<concord::IoError>([&] { run_task((tmp / "missing.json").string()); });
  EXPECT_NE(m.find("missing.json: cannot open"), std::string::npos) << m;
  // A file the config names.
  m = error_of<concord::IoError>([&] {
    run_task("{\"task\": \"tokenize\", \"input\": \"" + (tmp / "no.jsonl").string() + "\"}", {},
             (tmp / "run").string());
  });
  EXPECT_NE(m.find("no.jsonl: cannot open"), std::string::npos) << m;
  m = error_of<concord::IoError>([&] {
    concord::tasks::load_model((tmp / "nomodel.json").string(), "", c10::Device(c10::kCPU), "grape");
  });
  EXPECT_NE(m.find("nomodel.json"), std::string::npos) << m;
  m = error_of<concord::UnsupportedError>([&] { run_task(R"({"task": "pipeline"})"); });
  EXPECT_NE(m.find("task 'pipeline' is not available in this build yet"), std::string::npos) << m;
}

// A LibTorch error inside a public call reaches the caller as a concord::Error on one line,
// naming the call: here a model whose MLP weight has the wrong shape.
TEST(Tasks, ALibTorchShapeErrorInAPublicCallIsAConcordError) {
  concord::lm::CausalLM model(concord::lm::load_any_model_config(tiny_model()));
  bool broken = false;
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->named_parameters()) {
      if (p.key().find("mlp") != std::string::npos && p.value().dim() == 2) {
        p.value().set_data(at::zeros({7, 5}));
        broken = true;
        break;
      }
    }
  }
  ASSERT_TRUE(broken) << "no MLP weight found to break";
  model->eval();
  concord::lm::GenerationOptions g;
  g.max_new_tokens = 2;
  std::string m = error_of<concord::Error>([&] { concord::lm::generate(model, {{1, 2, 3}}, g); });
  EXPECT_NE(m.find("lm::generate: "), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  m = error_of<concord::Error>(
      [&] { concord::lm::score_continuations(model, {{1, 2}}, {{3, 4}}, {}); });
  EXPECT_NE(m.find("lm::score_continuations: "), std::string::npos) << m;
  // Options are checked against their declared ranges before any work.
  g.temperature = 0;
  m = error_of<concord::ConfigError>([&] { concord::lm::generate(model, {{1}}, g); });
  EXPECT_NE(m.find("generate options: key 'temperature': must be > 0, got 0"), std::string::npos)
      << m;
}

TEST(Tasks, GenerationOptionsRoundTripThroughTheirSchema) {
  concord::lm::GenerationOptions g;
  g.max_new_tokens = 12;
  g.do_sample = true;
  g.temperature = 0.7;
  g.top_k = 40;
  g.top_p = 0.9;
  g.stop_strings = {"\n\n"};
  g.pad_token_id = 0;
  g.seed = 5;
  const auto j = g.to_json();
  EXPECT_EQ(j["top_p"], 0.9);
  EXPECT_EQ(j["stop_strings"], concord::Json::array({"\n\n"}));
  const auto back = concord::lm::GenerationOptions::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.pad_token_id, std::optional<int64_t>(0));
  EXPECT_FALSE(concord::lm::GenerationOptions::from_json(concord::Json::object()).pad_token_id.has_value());
  const std::string m = error_of<concord::ConfigError>(
      [] { concord::lm::GenerationOptions::from_json({{"top_pp", 0.5}}, "gen.json"); });
  EXPECT_NE(m.find("gen.json: unknown key 'top_pp' (did you mean 'top_p'?)"), std::string::npos) << m;
}
