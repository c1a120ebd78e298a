// OptionsSchema<T>: one declaration per key gives the struct's config schema, JSON in and out,
// defaults and validation.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/options.h"

using concord::ConfigError;
using concord::ConfigType;
using concord::Json;
using concord::OptionsSchema;
namespace opt = concord::opt;

namespace {

enum class Policy { stop, skip };

struct Inner {
  double lr = 3e-4;
  int64_t warmup = 0;
};

struct Sampling {
  double temperature = 1.0;
  double top_p = 1.0;
  std::vector<std::string> stop;
};

struct Options {
  std::string model;
  int64_t batch_size = 16;
  uint64_t seed = 1234;
  bool dedup = true;
  std::string mode = "grape";
  std::vector<int64_t> seeds = {1, 2};
  std::optional<int64_t> pad;
  Policy policy = Policy::stop;
  Inner optimizer;
  Sampling sampling;
};

const OptionsSchema<Sampling>& sampling_schema() {
  static const OptionsSchema<Sampling> schema = [] {
    OptionsSchema<Sampling> s("sampling");
    s.field("temperature", &Sampling::temperature, "divides the logits", opt::greater_than(0))
        .field("top_p", &Sampling::top_p, "nucleus", opt::greater_than(0), opt::at_most(1))
        .field("stop", &Sampling::stop, "stop strings");
    return s;
  }();
  return schema;
}

const OptionsSchema<Options>& options_schema() {
  static const OptionsSchema<Options> schema = [] {
    OptionsSchema<Options> s("test options");
    s.field("model", &Options::model, "model path", opt::required())
        .field("batch_size", &Options::batch_size, "rows per pass", opt::at_least(1))
        .field("seed", &Options::seed, "seed")
        .field("dedup", &Options::dedup, "score duplicates once")
        .field("mode", &Options::mode, "selection", opt::one_of({"grape", "random", "all"}))
        .field("seeds", &Options::seeds, "one run per seed", opt::in_range(0, 100))
        .field("pad", &Options::pad, "padding id (null: the model's)")
        .enum_field("policy", &Options::policy, {{"stop", Policy::stop}, {"skip", Policy::skip}},
                    "bad lines")
        .field("lr", &Options::optimizer, &Inner::lr, "peak learning rate", opt::greater_than(0))
        .field("warmup", &Options::optimizer, &Inner::warmup, "warm-up steps", opt::at_least(0))
        .section("sampling", &Options::sampling, sampling_schema(), "sampling settings");
    return s;
  }();
  return schema;
}

std::string config_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.kind(), concord::ErrorKind::config);
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

}  // namespace

TEST(Options, DefaultsComeFromTheStructAndTypesFromTheMembers) {
  const auto schema = options_schema().config_schema();
  const auto* batch = schema.find("batch_size");
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->type, ConfigType::Int);
  EXPECT_EQ(batch->default_value, 16);
  EXPECT_EQ(batch->help, "rows per pass");
  EXPECT_EQ(*batch->minimum, 1.0);
  EXPECT_TRUE(schema.find("model")->required);
  EXPECT_EQ(schema.find("dedup")->type, ConfigType::Bool);
  EXPECT_EQ(schema.find("lr")->type, ConfigType::Float);
  EXPECT_EQ(schema.find("lr")->default_value, 3e-4);
  EXPECT_EQ(schema.find("seeds")->type, ConfigType::Array);
  EXPECT_EQ(schema.find("seeds")->element_type, ConfigType::Int);
  EXPECT_EQ(schema.find("seeds")->default_value, Json::array({1, 2}));
  EXPECT_TRUE(schema.find("pad")->default_value.is_null());
  EXPECT_EQ(schema.find("policy")->type, ConfigType::String);
  EXPECT_EQ(schema.find("policy")->choices, (std::vector<std::string>{"stop", "skip"}));
  EXPECT_EQ(schema.find("policy")->default_value, "stop");
  EXPECT_EQ(schema.find("sampling.top_p")->default_value, 1.0);
  // Unsigned members may not go below zero, without saying so.
  EXPECT_EQ(*schema.find("seed")->minimum, 0.0);

  // Absent keys take T{}'s values.
  const Options o = options_schema().from_json({{"model", "m"}}, "run.json");
  const Options d;
  EXPECT_EQ(o.model, "m");
  EXPECT_EQ(o.batch_size, d.batch_size);
  EXPECT_EQ(o.seeds, d.seeds);
  EXPECT_FALSE(o.pad.has_value());
  EXPECT_EQ(o.policy, Policy::stop);
  EXPECT_EQ(o.optimizer.lr, d.optimizer.lr);
  EXPECT_EQ(o.sampling.temperature, 1.0);
}

TEST(Options, JsonRoundTrip) {
  Options o;
  o.model = "configs/models/tiny.json";
  o.batch_size = 3;
  o.seed = 7;
  o.dedup = false;
  o.mode = "random";
  o.seeds = {4, 5, 6};
  o.pad = 0;
  o.policy = Policy::skip;
  o.optimizer.lr = 0.01;
  o.optimizer.warmup = 9;
  o.sampling.temperature = 0.5;
  o.sampling.stop = {"\n\n", "Question:"};
  const Json j = options_schema().to_json(o);
  EXPECT_EQ(j["batch_size"], 3);
  EXPECT_EQ(j["policy"], "skip");
  EXPECT_EQ(j["lr"], 0.01);  // a member of a member, at the top level
  EXPECT_EQ(j["sampling"]["stop"], Json::array({"\n\n", "Question:"}));
  EXPECT_EQ(j["pad"], 0);

  const Options back = options_schema().from_json(j, "round trip");
  EXPECT_EQ(back.model, o.model);
  EXPECT_EQ(back.batch_size, 3);
  EXPECT_EQ(back.seed, 7u);
  EXPECT_FALSE(back.dedup);
  EXPECT_EQ(back.mode, "random");
  EXPECT_EQ(back.seeds, o.seeds);
  EXPECT_EQ(back.pad, std::optional<int64_t>(0));
  EXPECT_EQ(back.policy, Policy::skip);
  EXPECT_EQ(back.optimizer.lr, 0.01);
  EXPECT_EQ(back.optimizer.warmup, 9);
  EXPECT_EQ(back.sampling.temperature, 0.5);
  EXPECT_EQ(back.sampling.stop, o.sampling.stop);
  EXPECT_EQ(options_schema().to_json(back), j);

  // An empty optional goes out as null and comes back empty.
  o.pad.reset();
  EXPECT_TRUE(options_schema().to_json(o)["pad"].is_null());
  EXPECT_FALSE(options_schema().from_json(options_schema().to_json(o), "x").pad.has_value());
}

TEST(Options, UnknownKeysSuggestTheNearestOne) {
  std::string m = config_error(
      [] { options_schema().from_json({{"model", "m"}, {"batch_sise", 4}}, "run.json"); });
  EXPECT_NE(m.find("run.json: unknown key 'batch_sise' (did you mean 'batch_size'?)"),
            std::string::npos)
      << m;
  m = config_error([] {
    options_schema().from_json({{"model", "m"}, {"sampling", {{"temprature", 2.0}}}}, "run.json");
  });
  EXPECT_NE(m.find("unknown key 'sampling.temprature' (did you mean 'sampling.temperature'?)"),
            std::string::npos)
      << m;
  m = config_error([] { options_schema().from_json({{"model", "m"}, {"zzzzzz", 1}}, "run.json"); });
  EXPECT_NE(m.find("valid keys at the top level: model, batch_size"), std::string::npos) << m;
  m = config_error([] { options_schema().from_json(Json::object(), "run.json"); });
  EXPECT_NE(m.find("run.json: missing required key 'model' (model path)"), std::string::npos) << m;

  // --set overrides are held to the same schema, with the same suggestion.
  const auto schema = options_schema().config_schema();
  Json raw = {{"model", "m"}};
  m = config_error([&] { concord::apply_override(raw, "sampling.top_q=0.5", schema); });
  EXPECT_NE(m.find("--set sampling.top_q=0.5: unknown key 'sampling.top_q' (did you mean "
                   "'sampling.top_p'?)"),
            std::string::npos)
      << m;
}

TEST(Options, ChoicesAndRangesAreChecked) {
  const Json base = {{"model", "m"}};
  auto with = [&](const std::string& key, const Json& value) {
    Json j = base;
    j[key] = value;
    return config_error([&] { options_schema().from_json(j, "run.json"); });
  };
  std::string m = with("mode", "best");
  EXPECT_NE(m.find("run.json: key 'mode': 'best' is not one of: grape, random, all"),
            std::string::npos)
      << m;
  m = with("batch_size", 0);
  EXPECT_NE(m.find("run.json: key 'batch_size': must be >= 1, got 0"), std::string::npos) << m;
  m = with("batch_size", 1.5);
  EXPECT_NE(m.find("key 'batch_size': expected integer, got number 1.5"), std::string::npos) << m;
  m = with("seed", -1);
  EXPECT_NE(m.find("key 'seed': must be >= 0, got -1"), std::string::npos) << m;
  m = with("seeds", Json::array({1, 200}));
  EXPECT_NE(m.find("key 'seeds[1]': must be in [0, 100], got 200"), std::string::npos) << m;
  m = with("seeds", Json::array({1, "two"}));
  EXPECT_NE(m.find("key 'seeds[1]': expected integer, got string \"two\""), std::string::npos) << m;
  m = with("policy", "ignore");
  EXPECT_NE(m.find("key 'policy': 'ignore' is not one of: stop, skip"), std::string::npos) << m;
  m = with("lr", 0);
  EXPECT_NE(m.find("key 'lr': must be > 0, got 0"), std::string::npos) << m;
  m = with("sampling", {{"top_p", 1.5}});
  EXPECT_NE(m.find("key 'sampling.top_p': must be in (0, 1], got 1.5"), std::string::npos) << m;
  // The bounds themselves: inclusive where declared so.
  Json edge = base;
  edge["sampling"] = {{"top_p", 1.0}};
  edge["seeds"] = Json::array({0, 100});
  edge["batch_size"] = 1;
  EXPECT_NO_THROW(options_schema().from_json(edge, "run.json"));

  // --set: parsed for the key's type, then the same checks.
  const auto schema = options_schema().config_schema();
  Json raw = base;
  m = config_error([&] { concord::apply_override(raw, "batch_size=-2", schema); });
  EXPECT_NE(m.find("--set batch_size=-2: key 'batch_size': must be >= 1, got -2"),
            std::string::npos)
      << m;
  concord::apply_override(raw, "batch_size=8", schema);
  EXPECT_EQ(options_schema().from_json(raw, "run.json").batch_size, 8);

  // A struct built in code is held to the same rules.
  Options o;
  o.model = "m";
  EXPECT_NO_THROW(options_schema().validate(o, "Options"));
  o.sampling.temperature = 0;
  m = config_error([&] { options_schema().validate(o, "Options"); });
  EXPECT_NE(m.find("Options: key 'sampling.temperature': must be > 0, got 0"), std::string::npos)
      << m;
}

TEST(Options, IncludeReusesAComponentsKeysAtTheTopLevel) {
  struct Task {
    std::string pool;
    Sampling sampling = [] {
      Sampling s;
      s.temperature = 0.7;  // the task's own default wins over Sampling{}'s
      return s;
    }();
  };
  OptionsSchema<Task> t("task");
  t.field("pool", &Task::pool, "pool file", opt::required())
      .include(&Task::sampling, sampling_schema(), {"stop"});
  const auto schema = t.config_schema();
  EXPECT_EQ(schema.find("temperature")->default_value, 0.7);
  EXPECT_EQ(schema.find("stop"), nullptr);
  const Task task = t.from_json({{"pool", "p.jsonl"}, {"top_p", 0.9}}, "task.json");
  EXPECT_EQ(task.sampling.top_p, 0.9);
  EXPECT_EQ(task.sampling.temperature, 0.7);
  const std::string m =
      config_error([&] { t.from_json({{"pool", "p"}, {"top_p", 0}}, "task.json"); });
  EXPECT_NE(m.find("task.json: key 'top_p': must be in (0, 1], got 0"), std::string::npos) << m;
  // A key declared twice is a programming error, caught when the schema is built.
  OptionsSchema<Task> twice("twice");
  twice.field("pool", &Task::pool, "pool");
  EXPECT_THROW(twice.field("pool", &Task::pool, "again"), concord::Error);
  EXPECT_THROW(twice.include(&Task::sampling, sampling_schema(), {"no_such_key"}), concord::Error);
}
