#include "task_diversity.h"

#include <filesystem>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/plot.h"
#include "concord/core/runtime.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/jsonl.h"
#include "concord/lm/diversity.h"
#include "concord/text/tokenizer.h"
#include "concord/tasks/model_loading.h"
#include "concord/tasks/text_input.h"

namespace concord::tasks {

namespace {

struct DiversityTaskOptions {
  std::string model;
  std::string weights;
  std::string model_name;
  std::string tokenizer;
  std::string input;
  int64_t documents = 64;
  int64_t max_length = 128;
  int64_t batch_size = 8;
  std::string device = "cpu";
};

const OptionsSchema<DiversityTaskOptions>& diversity_options_schema() {
  static const OptionsSchema<DiversityTaskOptions> schema = [] {
    OptionsSchema<DiversityTaskOptions> s("diversity task");
    s.field("model", &DiversityTaskOptions::model,
            "a Hugging Face model folder, or a model config file (Concord's or config.json)",
            opt::required())
        .field("weights", &DiversityTaskOptions::weights,
               "safetensors weights for a model config file (empty: fresh seeded weights)")
        .field("model_name", &DiversityTaskOptions::model_name,
               "name in the report (default: the model's file or folder name)")
        .field("tokenizer", &DiversityTaskOptions::tokenizer,
               "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
        .field("input", &DiversityTaskOptions::input,
               "JSONL file of {\"text\"} records (empty: the built-in corpus)")
        .field("documents", &DiversityTaskOptions::documents,
               "texts to measure: the first N of the file, or N built-in documents (0: the "
               "whole file)",
               opt::at_least(0))
        .field("max_length", &DiversityTaskOptions::max_length,
               "tokens per text at most (longer are cut)", opt::at_least(2))
        .field("batch_size", &DiversityTaskOptions::batch_size, "texts per forward pass",
               opt::at_least(1))
        .field("device", &DiversityTaskOptions::device, "cpu, cuda, cuda:N or auto");
    return s;
  }();
  return schema;
}

}  // namespace

Task diversity_task() {
  Task t;
  t.summary = "Per-layer feature diversity d_M(H) of a causal language model (PanGu-pi's "
              "feature-collapse analysis)";
  t.schema = [] { return diversity_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const DiversityTaskOptions o = diversity_options_schema().read(config);
    const std::string model_path = o.model;
    const int64_t documents = o.documents;
    const std::string input = o.input;
    CONCORD_CHECK(!input.empty() || documents > 0,
                  "diversity: documents must be > 0 for the built-in corpus");
    lm::DiversityOptions options;
    options.max_length = o.max_length;
    options.batch_size = o.batch_size;

    const auto device = select_device(o.device);
    auto model = load_model(model_path, o.weights, device, "diversity");
    const auto tokenizer =
        text::load_tokenizer(tokenizer_path_for(model_path, o.tokenizer, "diversity"));
    std::string name = o.model_name;
    if (name.empty()) name = model_display_name(model_path);

    const std::vector<std::string> texts =
        input.empty() ? data::builtin_corpus(documents, config["seed"].get<uint64_t>())
                      : read_jsonl_texts(input, documents);
    CONCORD_CHECK(!texts.empty(), "diversity: no texts in '", input, "'");
    const lm::LayerDiversity r = lm::layer_diversity_texts(model, *tokenizer, texts, options);
    CONCORD_CHECK(r.sequences > 0, "diversity: every text is shorter than ", options.min_length,
                  " tokens; nothing to measure");

    // One metrics line per layer; "step" is the layer index, so the run's charts have depth on x.
    Json layers = Json::array();
    std::vector<std::vector<std::string>> rows;
    Series relative{name, {}, {}}, per_token{name, {}, {}};
    for (size_t l = 0; l < r.num_layers(); ++l) {
      dir.metrics().log_json({{"step", l},
                              {"layer", lm::LayerDiversity::layer_name(l)},
                              {"diversity/distance", r.distance[l]},
                              {"diversity/per_token", r.per_token[l]},
                              {"diversity/relative", r.relative[l]}});
      rows.push_back({std::to_string(l), lm::LayerDiversity::layer_name(l), fixed(r.distance[l], 3),
                      fixed(r.per_token[l], 4), fixed(r.relative[l], 4)});
      relative.x.push_back(static_cast<double>(l));
      relative.y.push_back(r.relative[l]);
      per_token.x.push_back(static_cast<double>(l));
      per_token.y.push_back(r.per_token[l]);
    }
    Json summary = r.to_json();
    summary["model"] = name;
    summary["input"] = input.empty() ? "builtin_corpus" : input;
    write_file_atomic(dir.file("diversity.json"), summary.dump(2) + "\n");
    plot_lines(dir.chart("diversity_relative.png"),
               {"relative diversity d_M(H) / ||H||_F by layer", "layer (0: embedding)",
                "d_M(H) / ||H||_F"},
               {relative});
    plot_lines(dir.chart("diversity_per_token.png"),
               {"per-token diversity d_M(H) / sqrt(N) by layer", "layer (0: embedding)",
                "d_M(H) / sqrt(N)"},
               {per_token});

    report.paragraph(
        "Model `" + name + "` (" + model_path + ") on " +
        (input.empty() ? std::to_string(documents) + " documents of the built-in corpus"
                       : "`" + input + "`") +
        ": " + std::to_string(r.sequences) + " texts, " + std::to_string(r.tokens) +
        " tokens (" + std::to_string(r.truncated) + " cut to " +
        std::to_string(options.max_length) + " tokens, " + std::to_string(r.skipped) +
        " too short to measure).");
    report.heading("Feature diversity by layer")
        .paragraph("d_M(H) = min_x ||H - 1 x^T||_F = ||H - 1 mean(H)^T||_F for the features H "
                   "(tokens x d) of one text at one layer (PanGu-pi, Section 3): 0 when every "
                   "token has the same feature. Each column is a mean over texts; padding is "
                   "excluded; layer 0 is the input embedding, layer l the output of block l "
                   "(before the final norm). `relative` divides by ||H||_F and is the one to "
                   "compare across depths.")
        .table({"layer", "name", "d_M(H)", "d_M(H) / sqrt(N)", "d_M(H) / ||H||_F"}, rows)
        .image("relative diversity by layer", "charts/diversity_relative.png")
        .image("per-token diversity by layer", "charts/diversity_per_token.png")
        .paragraph("All values: [diversity.json](diversity.json).");
  };
  return t;
}

}  // namespace concord::tasks
