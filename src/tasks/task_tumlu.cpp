#include "task_tumlu.h"

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
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

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

}  // namespace

Task tumlu_task() {
  Task t;
  t.summary = "TUMLU evaluation of a causal language model (the benchmark's 5-shot protocol, "
              "its CoT variant, or log-likelihood)";
  t.schema = [] {
    ConfigSchema s;
    s.required("model", ConfigType::String,
               "a Hugging Face model folder, or a model config file (Concord's or config.json)")
        .optional("weights", ConfigType::String, "",
                  "safetensors weights for a model config file (empty: fresh seeded weights)")
        .optional("model_name", ConfigType::String, "",
                  "folder name under outputs/<protocol>/ (default: the model's file name)")
        .optional("tokenizer", ConfigType::String, "",
                  "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
        .optional("data_dir", ConfigType::String, "",
                  "TUMLU-mini root (default $CONCORD_TUMLU_DIR, else ../shared/data/tumlu-mini)")
        .optional("languages", ConfigType::Array, Json::array(),
                  "language folders to evaluate (empty: all present)")
        .choice("protocol", {"generative", "loglik", "cot"}, "generative",
                "generative: 5-shot; cot: worked-solution shots; loglik: option letters scored")
        .choice("extractor", {"official", "robust"}, "official", "answer extractor")
        .optional("shuffle", ConfigType::Bool, true, "shuffle options (seeded per item)")
        .optional("shuffle_seed", ConfigType::Int, 1234, "seed of the option shuffling")
        .optional("max_items_per_subject", ConfigType::Int, 0, "test items per subject (0: all)")
        .optional("max_new_tokens", ConfigType::Int, 0,
                  "generation limit (0: 32 for generative, 512 for cot)")
        .optional("batch_size", ConfigType::Int, 16,
                  "prompts per generation batch; loglik: items per forward pass")
        .choice("loglik_target", {"letter", "text"}, "letter",
                "loglik continuation: \" A\" or \" \" + option text")
        .optional("device", ConfigType::String, "cpu", "cpu, cuda, cuda:N or auto");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const std::string model_path = config["model"].get<std::string>();
    const auto device = select_device(config["device"].get<std::string>());
    auto model = load_model(model_path, config["weights"].get<std::string>(), device, "tumlu");
    std::shared_ptr<const text::Tokenizer> tokenizer = text::load_tokenizer(
        tokenizer_path_for(model_path, config["tokenizer"].get<std::string>(), "tumlu"));

    std::string data_dir = config["data_dir"].get<std::string>();
    if (data_dir.empty()) data_dir = default_tumlu_dir();
    CONCORD_CHECK(fs::is_directory(data_dir), "tumlu: data_dir '", data_dir,
                  "' is not a folder (set data_dir or CONCORD_TUMLU_DIR)");
    const auto languages = config["languages"].get<std::vector<std::string>>();
    eval::TumluData data = eval::load_tumlu(data_dir, languages);
    const int64_t max_items = config["max_items_per_subject"].get<int64_t>();
    CONCORD_CHECK(max_items >= 0, "tumlu: max_items_per_subject must be >= 0, got ", max_items);
    if (max_items > 0) {
      for (auto& language : data.languages) {
        for (auto& subject : language.subjects) {
          if (static_cast<int64_t>(subject.test.size()) > max_items) subject.test.resize(static_cast<size_t>(max_items));
        }
      }
    }

    eval::CausalLmTumluOptions ao;
    ao.name = config["model_name"].get<std::string>();
    if (ao.name.empty()) ao.name = model_display_name(model_path);
    ao.item_batch_size = config["batch_size"].get<int64_t>();
    eval::CausalLmTumluModel adapter(model, tokenizer, ao);

    eval::TumluEvalOptions options;
    const std::string protocol = config["protocol"].get<std::string>();
    options.protocol = protocol == "cot" ? "generative_cot" : protocol;
    options.languages = languages;
    options.shuffle = config["shuffle"].get<bool>();
    options.seed = config["shuffle_seed"].get<uint64_t>();
    options.max_new_tokens = config["max_new_tokens"].get<int64_t>();
    options.batch_size = config["batch_size"].get<int64_t>();
    CONCORD_CHECK(options.batch_size > 0, "tumlu: batch_size must be > 0, got ", options.batch_size);
    options.loglik_target = config["loglik_target"].get<std::string>();
    options.extractor = config["extractor"].get<std::string>();
    // Launched as torchrun launches: each rank takes its share and the last one merges.
    options.rank = env_int("RANK", 0);
    options.world_size = env_int("WORLD_SIZE", 1);

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
