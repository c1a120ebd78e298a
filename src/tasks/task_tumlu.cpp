#include "task_tumlu.h"

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "concord/core/error.h"
#include "concord/core/options.h"
#include "concord/core/runtime.h"
#include "concord/core/shard.h"
#include "concord/eval/tumlu_eval.h"
#include "concord/eval/tumlu_lm_adapter.h"
#include "concord/eval/tumlu_report.h"
#include "concord/text/tokenizer.h"
#include "concord/tasks/model_loading.h"

namespace concord::tasks {

namespace {

namespace fs = std::filesystem;

// The TUMLU-mini folder: $CONCORD_TUMLU_DIR, else ../shared/data/tumlu-mini (as the tests).
std::string default_tumlu_dir() {
  if (const char* env = std::getenv("CONCORD_TUMLU_DIR"); env != nullptr && *env != '\0') return env;
  return "../shared/data/tumlu-mini";
}

// The task's config: its own keys and TUMLU's evaluation keys (all but protocol, which the task
// names its own way: cot for generative_cot).
struct TumluTaskOptions {
  std::string model;
  std::string weights;
  std::string model_name;
  std::string tokenizer;
  std::string data_dir;
  std::string protocol = "generative";
  int64_t max_items_per_subject = 0;
  eval::TumluEvalOptions eval;
  std::string device = "cpu";
};

const OptionsSchema<TumluTaskOptions>& tumlu_task_options_schema() {
  static const OptionsSchema<TumluTaskOptions> schema = [] {
    OptionsSchema<TumluTaskOptions> s("tumlu task");
    s.field("model", &TumluTaskOptions::model,
            "a Hugging Face model folder, or a model config file (Concord's or config.json)",
            opt::required())
        .field("weights", &TumluTaskOptions::weights,
               "safetensors weights for a model config file (empty: fresh seeded weights)")
        .field("model_name", &TumluTaskOptions::model_name,
               "folder name under outputs/<protocol>/ (default: the model's file name)")
        .field("tokenizer", &TumluTaskOptions::tokenizer,
               "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
        .field("data_dir", &TumluTaskOptions::data_dir,
               "TUMLU-mini root (default $CONCORD_TUMLU_DIR, else ../shared/data/tumlu-mini)")
        .field("protocol", &TumluTaskOptions::protocol,
               "generative: 5-shot; cot: worked-solution shots; loglik: option letters scored",
               opt::one_of({"generative", "loglik", "cot"}))
        .field("max_items_per_subject", &TumluTaskOptions::max_items_per_subject,
               "test items per subject (0: all)", opt::at_least(0))
        .include(&TumluTaskOptions::eval, eval::tumlu_eval_options_schema(), {"protocol"})
        .field("device", &TumluTaskOptions::device, "cpu, cuda, cuda:N or auto");
    return s;
  }();
  return schema;
}

}  // namespace

Task tumlu_task() {
  Task t;
  t.writes_rank_parts = true;
  t.summary = "TUMLU evaluation of a causal language model (the benchmark's 5-shot protocol, "
              "its CoT variant, or log-likelihood)";
  t.schema = [] { return tumlu_task_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const TumluTaskOptions o = tumlu_task_options_schema().read(config);
    const std::string model_path = o.model;
    const auto device = select_device(o.device);
    auto model = load_model(model_path, o.weights, device, "tumlu");
    std::shared_ptr<const text::Tokenizer> tokenizer =
        text::load_tokenizer(tokenizer_path_for(model_path, o.tokenizer, "tumlu"));

    std::string data_dir = o.data_dir;
    if (data_dir.empty()) data_dir = default_tumlu_dir();
    CONCORD_CHECK(fs::is_directory(data_dir), "tumlu: data_dir '", data_dir,
                  "' is not a folder (set data_dir or CONCORD_TUMLU_DIR)");
    const auto& languages = o.eval.languages;
    eval::TumluData data = eval::load_tumlu(data_dir, languages);
    const int64_t max_items = o.max_items_per_subject;
    if (max_items > 0) {
      for (auto& language : data.languages) {
        for (auto& subject : language.subjects) {
          if (static_cast<int64_t>(subject.test.size()) > max_items) subject.test.resize(static_cast<size_t>(max_items));
        }
      }
    }

    eval::CausalLmTumluOptions ao;
    ao.name = o.model_name;
    if (ao.name.empty()) ao.name = model_display_name(model_path);
    ao.item_batch_size = o.eval.batch_size;
    eval::CausalLmTumluModel adapter(model, tokenizer, ao);

    eval::TumluEvalOptions options = o.eval;
    options.protocol = o.protocol == "cot" ? "generative_cot" : o.protocol;
    // Launched as torchrun launches: each rank takes its share and whoever finds every part
    // merges (core/shard.h).
    const Shard shard = process_shard();
    options.rank = static_cast<int>(shard.rank);
    options.world_size = static_cast<int>(shard.world_size);

    const auto result = eval::run_tumlu_eval(adapter, data, dir.path(), options);
    const auto& stats = adapter.stats();
    dir.metrics().log_json({{"step", 0},
                            {"tumlu/subjects_run", result.subjects_run},
                            {"tumlu/subjects_resumed", result.subjects_resumed},
                            {"tumlu/subjects_pending", result.subjects_pending},
                            {"tumlu/subjects_not_applicable", result.subjects_not_applicable},
                            {"tumlu/prefix_cache_hits", stats.hits},
                            {"tumlu/prefix_cache_builds", stats.builds},
                            {"tumlu/full_forwards", stats.full_forwards}});
    report.paragraph("Model `" + model_path + "` as `" + adapter.name() + "`, protocol `" +
                     options.protocol + "`, extractor `" + options.extractor + "`, data `" +
                     data_dir + "`. Subjects run " + std::to_string(result.subjects_run) +
                     ", resumed " + std::to_string(result.subjects_resumed) + ", not applicable " +
                     std::to_string(result.subjects_not_applicable) + ".");
    if (!result.complete()) {
      report.paragraph(std::to_string(result.subjects_pending) +
                       " subjects wait for other ranks' parts; no scores yet.");
      return;
    }
    const eval::ReportOptions ro;
    const auto scores = eval::score_model(options.protocol, adapter.name(), result.outcomes, ro);
    // results.json and the chart; its report.md is replaced by the run's, which carries the
    // same tables below.
    eval::write_tumlu_report(dir.path(), {scores}, ro, options.extractor);
    report.heading("TUMLU accuracy (%)")
        .raw(eval::markdown_language_table({scores}) + "\n")
        .raw(eval::markdown_script_table({scores}) + "\n")
        .heading("Subjects", 3)
        .raw(eval::markdown_subject_table(scores) + "\n")
        .paragraph("Every number with its 95% bootstrap interval: [results.json](results.json).");
  };
  return t;
}

}  // namespace concord::tasks
