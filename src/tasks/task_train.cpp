#include "task_train.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/plot.h"
#include "concord/core/progress.h"
#include "concord/core/runtime.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/pretrain.h"
#include "concord/data/sft.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/model_config.h"
#include "concord/text/tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/checkpoint.h"
#include "concord/train/next_token.h"
#include "concord/train/trainer.h"
#include "concord/tasks/model_loading.h"

namespace concord::tasks {

namespace {

namespace fs = std::filesystem;

// Keys both tasks share: the model, its tokenizer, the device, batch size and the optimisation.
ConfigSchema common_training_schema() {
  ConfigSchema s;
  s.required("model", ConfigType::String,
             "a model config file (fresh weights from the seed) or a Hugging Face model folder "
             "(training continues from its weights)")
      .optional("weights", ConfigType::String, "", "safetensors weights for a model config file")
      .optional("tokenizer", ConfigType::String, "",
                "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
      .optional("batch_size", ConfigType::Int, 8, "rows per micro-batch")
      .optional("device", ConfigType::String, "cpu", "cpu, cuda, cuda:N or auto")
      .optional("save_model", ConfigType::Bool, true,
                "write the trained model to <run>/model as a Hugging Face folder")
      .section("train", train::train_schema(), "optimisation");
  return s;
}

// The model a training run starts from, in train mode on its device.
lm::CausalLM training_model(const Json& config, const std::string& task) {
  const auto device = select_device(config["device"].get<std::string>());
  lm::CausalLM model = load_model(config["model"].get<std::string>(),
                                  config["weights"].get<std::string>(), device, task);
  model->train();
  return model;
}

// The rows a training task trains on and the rows it holds out: a separate eval file when the
// config names one, else the last `fraction` of the training rows (one rule for every task).
template <typename Dataset>
class TrainEvalSplit {
 public:
  /// `all` must outlive the split; `eval_file` (optional) is kept inside it.
  TrainEvalSplit(const Dataset& all, std::unique_ptr<Dataset> eval_file, double fraction)
      : eval_file_(std::move(eval_file)),
        train_(all, 0, eval_file_ ? all.size() : all.size() - held_out(all.size(), fraction)),
        eval_(eval_file_ ? *eval_file_ : all, eval_file_ ? 0 : train_.size(),
              eval_file_ ? eval_file_->size() : all.size()) {}
  const train::DatasetSlice<Dataset>& train() const { return train_; }
  /// Null when nothing is held out.
  const train::DatasetSlice<Dataset>* eval() const { return eval_.size() > 0 ? &eval_ : nullptr; }

 private:
  static int64_t held_out(int64_t n, double fraction) {
    return static_cast<int64_t>(std::floor(fraction * static_cast<double>(n)));
  }
  std::unique_ptr<Dataset> eval_file_;
  train::DatasetSlice<Dataset> train_, eval_;
};

// Runs the Trainer with resume, saves the model, and writes the common part of the report.
template <typename Dataset>
void run_training(const Json& config, RunDirectory& dir, Report& report, lm::CausalLM model,
                  const text::Tokenizer& tokenizer, const std::string& tokenizer_path,
                  const Dataset& train_set, const Dataset* eval_set) {
  const auto options = train::TrainerOptions::from_json(config["train"]);
  const int64_t batch_size = config["batch_size"].get<int64_t>();
  CONCORD_CHECK(batch_size > 0, "batch_size must be positive, got ", batch_size);
  CONCORD_CHECK(train_set.size() > 0, "the training data gave no rows");

  data::SamplerOptions sampling;
  sampling.batch_size = batch_size;
  sampling.seed = config["seed"].get<uint64_t>();
  train::SampledBatches<Dataset> train_batches(train_set, sampling.for_this_process());
  std::unique_ptr<train::SampledBatches<Dataset>> eval_batches;
  if (eval_set != nullptr && eval_set->size() > 0) {
    data::SamplerOptions in_order;
    in_order.batch_size = batch_size;
    in_order.shuffle = false;
    eval_batches = std::make_unique<train::SampledBatches<Dataset>>(*eval_set, in_order);
  }

  train::Trainer trainer({{"model", model.ptr()}}, options);
  train::NextTokenObjective objective(model);
  if (dir.resuming()) {
    if (auto ckpt = train::latest_checkpoint(dir.file("checkpoints"))) {
      trainer.restore(*ckpt, train_batches);
      dir.drop_metrics_after(trainer.step());
      spdlog::info("resuming from {} (step {})", ckpt->string(), trainer.step());
    } else {
      spdlog::info("--resume: no checkpoint in {}, starting at step 0",
                   dir.file("checkpoints").string());
    }
  }
  const int64_t first_step = trainer.step();
  const auto result = trainer.fit(objective, train_batches, eval_batches.get(), &dir);

  if (config["save_model"].get<bool>()) {
    const fs::path out = dir.file("model");
    lm::save_pretrained(model, out);
    // A tokenizer file travels with the weights, so the folder loads on its own.
    if (fs::is_regular_file(tokenizer_path)) {
      write_file_atomic(out / fs::path(tokenizer_path).filename(), read_file(tokenizer_path));
    } else if (fs::is_regular_file(fs::path(tokenizer_path) / "tokenizer.json")) {
      write_file_atomic(out / "tokenizer.json", read_file(fs::path(tokenizer_path) / "tokenizer.json"));
    }
  }

  // Charts: training loss per step, and evaluation loss where measured.
  const auto records = read_metrics(dir.file("metrics.jsonl"));
  std::vector<Series> series;
  for (const char* name : {"train/loss", "eval/loss"}) {
    Series s;
    s.label = name;
    for (const auto& [x, y] : metric_series(records, name)) {
      s.x.push_back(x);
      s.y.push_back(y);
    }
    if (!s.x.empty()) series.push_back(std::move(s));
  }
  ChartSpec spec;
  spec.title = "loss";
  spec.y_label = "mean token loss (nats)";
  plot_lines(dir.chart("loss.png"), spec, series);

  const double tok_per_s = result.seconds > 0 ? result.inputs / result.seconds : 0.0;
  std::vector<std::vector<std::string>> rows = {
      {"parameters", std::to_string(model->num_parameters())},
      {"steps", std::to_string(result.steps) +
                    (first_step > 0 ? " (resumed at " + std::to_string(first_step) + ")" : "")},
      {"final training loss", fixed(result.final_loss, 4)},
      {"throughput", human_count(tok_per_s) + " tokens/s"},
  };
  if (result.final_eval_loss) {
    rows.push_back({"evaluation loss", fixed(*result.final_eval_loss, 4)});
    rows.push_back({"evaluation perplexity", fixed(std::exp(*result.final_eval_loss), 2)});
  }
  if (result.last_checkpoint) {
    rows.push_back({"last checkpoint", fs::relative(*result.last_checkpoint, dir.path()).string()});
  }
  report.heading("Training").table({"", ""}, rows).image("loss", "charts/loss.png");
  if (config["save_model"].get<bool>()) {
    report.paragraph("The trained model is in [model/](model) (config.json + model.safetensors, "
                     "loadable by transformers for the gpt2/llama/mistral/qwen2 families).");
  }
  (void)tokenizer;
}

// The `data` section of a pretrain config.
struct PretrainData {
  std::string train = "builtin";
  std::string eval;
  double eval_fraction = 0.05;
  int64_t block_size = 128;
  int64_t builtin_documents = 2000;
  uint64_t builtin_seed = 1234;
  std::string on_bad_record = "stop";
};

const OptionsSchema<PretrainData>& pretrain_data_schema() {
  static const OptionsSchema<PretrainData> schema = [] {
    OptionsSchema<PretrainData> s("pretraining data");
    s.field("train", &PretrainData::train,
            "JSONL of {\"text\"} records, or 'builtin' (Concord's generated English corpus)")
        .field("eval", &PretrainData::eval,
               "held-out JSONL (empty: the last eval_fraction of the training blocks)")
        .field("eval_fraction", &PretrainData::eval_fraction,
               "share of blocks held out when eval is empty", opt::at_least(0), opt::less_than(1))
        .field("block_size", &PretrainData::block_size, "tokens per training row", opt::at_least(1))
        .field("builtin_documents", &PretrainData::builtin_documents,
               "documents of the built-in corpus", opt::at_least(1))
        .field("builtin_seed", &PretrainData::builtin_seed, "seed of the built-in corpus")
        .field("on_bad_record", &PretrainData::on_bad_record,
               "a bad JSONL line stops the run or is skipped", opt::one_of({"stop", "skip"}));
    return s;
  }();
  return schema;
}

// The `data` section of an sft config: files, hold-out, and data::SftOptions' keys.
struct SftData {
  std::string train;
  std::string eval;
  double eval_fraction = 0.05;
  data::SftOptions sft = [] {
    data::SftOptions o;
    o.max_length = 512;
    return o;
  }();
  std::string on_bad_record = "stop";
};

const OptionsSchema<SftData>& sft_data_schema() {
  static const OptionsSchema<SftData> schema = [] {
    OptionsSchema<SftData> s("SFT data");
    s.field("train", &SftData::train,
            "JSONL of {\"prompt\",\"completion\"} or {\"messages\"} records", opt::required())
        .field("eval", &SftData::eval, "held-out JSONL (empty: eval_fraction of train)")
        .field("eval_fraction", &SftData::eval_fraction, "share of rows held out when eval is empty",
               opt::at_least(0), opt::less_than(1))
        .include(&SftData::sft, data::sft_options_schema(), {"pad_to_max_length", "pad_id"})
        .field("on_bad_record", &SftData::on_bad_record,
               "a bad JSONL line stops the run or is skipped", opt::one_of({"stop", "skip"}));
    return s;
  }();
  return schema;
}

}  // namespace

Task pretrain_task() {
  Task t;
  t.summary = "Pretraining of a causal language model (next-token loss)";
  t.schema = [] {
    ConfigSchema s = common_training_schema();
    s.section("data", pretrain_data_schema().config_schema(), "what to train on");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const PretrainData d = pretrain_data_schema().read(config["data"]);
    const std::string model_path = config["model"].get<std::string>();
    const std::string tokenizer_path =
        tokenizer_path_for(model_path, config["tokenizer"].get<std::string>(), "pretrain");
    const auto tokenizer = text::load_tokenizer(tokenizer_path);
    lm::CausalLM model = training_model(config, "pretrain");
    const int64_t block = d.block_size;
    CONCORD_CHECK(block > 0 && block <= model->config.max_position_embeddings,
                  "data.block_size must be in [1, max_position_embeddings = ",
                  model->config.max_position_embeddings, "], got ", block);
    CONCORD_CHECK(tokenizer->vocab_size() <= model->config.vocab_size, "the tokenizer has ",
                  tokenizer->vocab_size(), " tokens, more than the model's vocab_size ",
                  model->config.vocab_size);

    data::JsonlOptions jo;
    jo.on_bad = data::bad_record_policy_from_string(d.on_bad_record);
    const std::string train_path = d.train;
    data::BadRecords bad;
    const uint64_t corpus_seed = d.builtin_seed;
    const data::PretrainDataset all =
        train_path == "builtin"
            ? data::PretrainDataset::from_texts(
                  data::builtin_corpus(d.builtin_documents, corpus_seed), *tokenizer, block)
            : data::PretrainDataset::from_jsonl(train_path, *tokenizer, block, jo, &bad);
    std::unique_ptr<data::PretrainDataset> eval_file;
    if (!d.eval.empty()) {
      eval_file = std::make_unique<data::PretrainDataset>(
          data::PretrainDataset::from_jsonl(d.eval, *tokenizer, block, jo, &bad));
    }
    const TrainEvalSplit<data::PretrainDataset> split(all, std::move(eval_file), d.eval_fraction);
    const auto& train_set = split.train();
    const auto* eval_ptr = split.eval();

    report.paragraph("Model `" + model_path + "` (" + lm::model_family_name(model->config.family) +
                     "), tokenizer `" + tokenizer_path + "`, data `" + train_path + "`: " +
                     std::to_string(train_set.size()) + " training blocks of " +
                     std::to_string(block) + " tokens, " +
                     std::to_string(eval_ptr ? eval_ptr->size() : 0) + " held out." +
                     (bad.count > 0 ? " " + bad.summary(train_path) : ""));
    run_training(config, dir, report, model, *tokenizer, tokenizer_path, train_set, eval_ptr);
  };
  return t;
}

Task sft_task() {
  Task t;
  t.summary = "Supervised fine-tuning of a causal language model (loss on completions only)";
  t.schema = [] {
    ConfigSchema s = common_training_schema();
    s.section("data", sft_data_schema().config_schema(), "what to fine-tune on");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const SftData d = sft_data_schema().read(config["data"]);
    const std::string model_path = config["model"].get<std::string>();
    const std::string tokenizer_path =
        tokenizer_path_for(model_path, config["tokenizer"].get<std::string>(), "sft");
    const auto tokenizer = text::load_tokenizer(tokenizer_path);
    lm::CausalLM model = training_model(config, "sft");

    const data::SftOptions so = d.sft;
    CONCORD_CHECK(so.max_length <= model->config.max_position_embeddings,
                  "data.max_length must be in [2, max_position_embeddings = ",
                  model->config.max_position_embeddings, "], got ", so.max_length);
    data::JsonlOptions jo;
    jo.on_bad = data::bad_record_policy_from_string(d.on_bad_record);

    const std::string train_path = d.train;
    const auto all = data::SftDataset::from_jsonl(train_path, *tokenizer, so, jo);
    std::unique_ptr<data::SftDataset> eval_file;
    if (!d.eval.empty()) {
      eval_file = std::make_unique<data::SftDataset>(
          data::SftDataset::from_jsonl(d.eval, *tokenizer, so, jo));
    }
    const TrainEvalSplit<data::SftDataset> split(all, std::move(eval_file), d.eval_fraction);
    const auto& train_set = split.train();
    const auto* eval_ptr = split.eval();

    const auto& st = all.stats();
    report.paragraph("Model `" + model_path + "`, tokenizer `" + tokenizer_path + "`, data `" +
                     train_path + "` with template `" + so.chat_template + "`: " +
                     std::to_string(st.samples) + " samples (" + std::to_string(st.skipped_too_long) +
                     " skipped as too long, " + std::to_string(st.truncated) + " truncated, " +
                     std::to_string(st.skipped_no_target) + " without a target), " +
                     std::to_string(train_set.size()) + " training rows, " +
                     std::to_string(eval_ptr ? eval_ptr->size() : 0) + " held out" +
                     (so.packing ? ", packed (" + fixed(100.0 * all.packing_efficiency(), 1) + "% of positions used)" : "") +
                     "." + (st.bad.count > 0 ? " " + st.bad.summary(train_path) : ""));
    dir.metrics().log_json({{"step", 0}, {"data", st.to_json()}});
    run_training(config, dir, report, model, *tokenizer, tokenizer_path, train_set, eval_ptr);
  };
  return t;
}

}  // namespace concord::tasks
