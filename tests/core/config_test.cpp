#include <gtest/gtest.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "test_support.h"

using concord::ConfigSchema;
using concord::ConfigType;
using concord::Json;

namespace {

ConfigSchema train_schema() {
  ConfigSchema optim("optimizer");
  optim.optional("learning_rate", ConfigType::Float, 3e-4, "peak learning rate")
      .optional("weight_decay", ConfigType::Float, 0.1, "AdamW decoupled weight decay")
      .choice("schedule", {"cosine", "linear", "constant"}, "cosine", "decay after warm-up");
  ConfigSchema s("run");
  s.required("task", ConfigType::String, "what to run")
      .optional("steps", ConfigType::Int, 100, "optimizer steps")
      .optional("bf16", ConfigType::Bool, false, "mixed precision")
      .optional("tags", ConfigType::Array, Json::array(), "free labels")
      .section("optimizer", optim, "AdamW settings");
  return s;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const concord::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, FillsDefaultsAndKeepsGivenValues) {
  Json in = {{"task", "sft"}, {"optimizer", {{"learning_rate", 1e-3}}}};
  Json out = train_schema().resolve(in, "run.json");
  EXPECT_EQ(out["task"], "sft");
  EXPECT_EQ(out["steps"], 100);
  EXPECT_EQ(out["bf16"], false);
  EXPECT_DOUBLE_EQ(out["optimizer"]["learning_rate"].get<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(out["optimizer"]["weight_decay"].get<double>(), 0.1);
  EXPECT_EQ(out["optimizer"]["schedule"], "cosine");
}

TEST(Config, UnknownKeyNamesFileAndPathAndSuggests) {
  Json in = {{"task", "sft"}, {"optimizer", {{"learning_rat", 1e-3}}}};
  std::string msg = error_of([&] { train_schema().resolve(in, "run.json"); });
  EXPECT_NE(msg.find("run.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key 'optimizer.learning_rat'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("did you mean 'optimizer.learning_rate'"), std::string::npos) << msg;
}

TEST(Config, FarUnknownKeyListsValidKeys) {
  Json in = {{"task", "sft"}, {"zzzzzz", 1}};
  std::string msg = error_of([&] { train_schema().resolve(in, "r.json"); });
  EXPECT_NE(msg.find("valid keys at the top level: task, steps, bf16, tags, optimizer"), std::string::npos) << msg;
}

TEST(Config, MissingRequiredKey) {
  std::string msg = error_of([&] { train_schema().resolve(Json::object(), "r.json"); });
  EXPECT_NE(msg.find("r.json: missing required key 'task'"), std::string::npos) << msg;
}

TEST(Config, MistypedKeys) {
  EXPECT_NE(error_of([&] { train_schema().resolve({{"task", "x"}, {"steps", 1.5}}, "r.json"); })
                .find("key 'steps': expected integer, got number 1.5"),
            std::string::npos);
  EXPECT_NE(error_of([&] { train_schema().resolve({{"task", "x"}, {"bf16", "yes"}}, "r.json"); })
                .find("key 'bf16': expected boolean, got string"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              train_schema().resolve({{"task", "x"}, {"optimizer", {{"schedule", "exp"}}}}, "r.json");
            }).find("'exp' is not one of: cosine, linear, constant"),
            std::string::npos);
  // An integer is a valid number.
  EXPECT_NO_THROW(train_schema().resolve({{"task", "x"}, {"optimizer", {{"learning_rate", 1}}}}, "r"));
}

TEST(Config, OverridesAreTypeChecked) {
  auto schema = train_schema();
  Json cfg = {{"task", "sft"}};
  concord::apply_override(cfg, "optimizer.learning_rate=2e-5", schema);
  concord::apply_override(cfg, "steps=7", schema);
  concord::apply_override(cfg, "bf16=true", schema);
  concord::apply_override(cfg, "task=grape", schema);  // strings need no quotes
  concord::apply_override(cfg, "tags=[\"a\",\"b\"]", schema);
  Json out = schema.resolve(cfg, "r.json");
  EXPECT_DOUBLE_EQ(out["optimizer"]["learning_rate"].get<double>(), 2e-5);
  EXPECT_EQ(out["steps"], 7);
  EXPECT_EQ(out["bf16"], true);
  EXPECT_EQ(out["task"], "grape");
  EXPECT_EQ(out["tags"].size(), 2u);

  EXPECT_NE(error_of([&] { concord::apply_override(cfg, "steps=abc", schema); })
                .find("--set steps=abc: 'abc' is not a valid integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { concord::apply_override(cfg, "steps=1.5", schema); })
                .find("expects integer, got number"),
            std::string::npos);
  EXPECT_NE(error_of([&] { concord::apply_override(cfg, "optimizer.lr=1", schema); })
                .find("unknown key 'optimizer.lr'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { concord::apply_override(cfg, "noequals", schema); })
                .find("expected key.path=value"),
            std::string::npos);
}

TEST(Config, SyntaxErrorNamesLineAndColumn) {
  concord::testing::TempDir tmp;
  auto path = concord::testing::write_file(tmp / "bad.json", "{\n  \"task\": \"sft\",\n  \"steps\": ,\n}\n");
  std::string msg = error_of([&] { concord::load_json_file(path); });
  EXPECT_NE(msg.find("bad.json: line 3 column"), std::string::npos) << msg;
}

TEST(Config, LoadConfigAppliesOverridesThenValidates) {
  concord::testing::TempDir tmp;
  auto path = concord::testing::write_file(tmp / "run.json", R"({"task": "sft", "steps": 5})");
  Json out = concord::load_config(path, train_schema(), {"steps=9"});
  EXPECT_EQ(out["steps"], 9);
  Json described = train_schema().describe();
  EXPECT_EQ(described["optimizer"]["keys"]["schedule"]["default"], "cosine");
  EXPECT_EQ(described["task"]["required"], true);
}

TEST(Config, NumberOverflowIsAFormatErrorNotACrash) {
  // Regression input from fuzz/fuzz_config.cpp: nlohmann throws out_of_range, not parse_error.
  std::string msg = error_of([] { concord::parse_json("33e33333333333xtr333a33.", "f.json"); });
  EXPECT_NE(msg.find("f.json: invalid JSON"), std::string::npos) << msg;
  auto schema = train_schema();
  Json cfg = {{"task", "x"}};
  msg = error_of([&] { concord::apply_override(cfg, "optimizer.learning_rate=1e999", schema); });
  EXPECT_NE(msg.find("is not a valid number"), std::string::npos) << msg;
}
