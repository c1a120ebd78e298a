#include "task_ablation.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "ablation_report.h"
#include "concord/tasks/text_input.h"
#include "concord/core/error.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/fortune.h"
#include "concord/data/jsonl.h"
#include "concord/data/pretrain.h"
#include "concord/lm/model_config.h"
#include "concord/text/tokenizer.h"
#include "concord/train/ablation.h"

namespace concord::tasks {

namespace {

// The documents of the configured corpus.
std::vector<std::string> read_corpus(const Json& d, uint64_t seed) {
  const std::string format = d["format"].get<std::string>();
  const std::string path = d["train"].get<std::string>();
  if (format == "builtin") return data::builtin_corpus(d["builtin_documents"].get<int64_t>(), seed);
  if (format == "fortune") return data::read_fortunes(path);
  return read_jsonl_texts(path);
}

}  // namespace

Task pangu_ablation_task() {
  Task t;
  t.summary = "PanGu-pi architecture ablation: Vanilla / SIAF / AS / SIAF+AS of equal size, "
              "several seeds; validation loss, per-layer feature diversity, forward latency";
  t.schema = [] {
    ConfigSchema data("corpus");
    data.choice("format", {"fortune", "jsonl", "builtin"}, "fortune",
                "fortune: fortune(6) files (Debian package fortunes); jsonl: {\"text\"} records; "
                "builtin: Concord's generated corpus")
        .optional("train", ConfigType::String, "/usr/share/games/fortunes", "file or folder")
        .optional("eval_every_nth", ConfigType::Int, 10,
                  "every n-th document is held out for validation (interleaved, so every source "
                  "file is represented on both sides)")
        .optional("block_size", ConfigType::Int, 128, "tokens per row")
        .optional("builtin_documents", ConfigType::Int, 3000, "documents for format builtin");
    ConfigSchema s;
    s.required("model", ConfigType::String,
               "a PanGu-pi model config (SIAF and augmented shortcuts on); the variants derive from it")
        .optional("variants", ConfigType::Array, Json::array({"vanilla", "siaf", "as", "siaf+as"}),
                  "variants, the first is the latency baseline")
        .optional("seeds", ConfigType::Array, Json::array({1, 2, 3}), "a training run per seed")
        .optional("tokenizer", ConfigType::String, "bytes", "tokenizer.json, .model, or 'bytes'")
        .optional("batch_size", ConfigType::Int, 16, "rows per step")
        .optional("diversity_sequences", ConfigType::Int, 32, "validation blocks measured for d_M")
        .optional("latency_batch", ConfigType::Int, 4, "rows of the timed forward pass")
        .optional("latency_repeats", ConfigType::Int, 20, "timed forward passes (median)")
        .section("data", data, "the corpus")
        .section("train", train::train_schema(), "optimisation, the same for every run");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const Json& d = config["data"];
    const auto tokenizer = text::load_tokenizer(config["tokenizer"].get<std::string>());
    const lm::ModelConfig pangu = lm::load_any_model_config(config["model"].get<std::string>());
    const auto variants = train::pangu_ablation_variants(
        pangu, config["variants"].get<std::vector<std::string>>());
    CONCORD_CHECK(tokenizer->vocab_size() <= pangu.vocab_size, "the tokenizer has ",
                  tokenizer->vocab_size(), " tokens, more than the model's vocab_size ",
                  pangu.vocab_size);

    const auto documents = read_corpus(d, config["seed"].get<uint64_t>());
    const int64_t nth = d["eval_every_nth"].get<int64_t>();
    CONCORD_CHECK(nth >= 2, "data.eval_every_nth must be >= 2, got ", nth);
    std::vector<std::string> train_docs, eval_docs;
    for (size_t i = 0; i < documents.size(); ++i) {
      (static_cast<int64_t>(i % static_cast<size_t>(nth)) == nth - 1 ? eval_docs : train_docs)
          .push_back(documents[i]);
    }
    const int64_t block = d["block_size"].get<int64_t>();
    CONCORD_CHECK(block > 0 && block <= pangu.max_position_embeddings,
                  "data.block_size must be in [1, max_position_embeddings]");
    const auto train_set = data::PretrainDataset::from_texts(train_docs, *tokenizer, block);
    const auto eval_set = data::PretrainDataset::from_texts(eval_docs, *tokenizer, block);

    train::AblationOptions o;
    o.train = train::TrainerOptions::from_json(config["train"]);
    o.batch_size = config["batch_size"].get<int64_t>();
    o.seeds = config["seeds"].get<std::vector<uint64_t>>();
    o.diversity_sequences = config["diversity_sequences"].get<int64_t>();
    o.latency_batch = config["latency_batch"].get<int64_t>();
    o.latency_repeats = config["latency_repeats"].get<int64_t>();
    const auto results = train::run_ablation(variants, train_set, eval_set, o,
                                             [](const std::string& v, uint64_t seed) {
                                               spdlog::info("ablation: {} seed {}", v, seed);
                                             });
    report.paragraph(fmt::format(
        "Corpus `{}` ({}): {} documents, {} for training ({} tokens, {} blocks of {}), {} held out "
        "({} blocks). Each run: {} steps of {} rows, peak lr {}, {} warm-up, {} decay.",
        d["train"].get<std::string>(), d["format"].get<std::string>(), documents.size(),
        train_docs.size(), train_set.num_tokens(), train_set.size(), block, eval_docs.size(),
        eval_set.size(), o.train.max_steps, o.batch_size, o.train.optimizer.lr,
        o.train.warmup_steps, o.train.lr_schedule));
    report_ablation(results, dir, report);
  };
  return t;
}

}  // namespace concord::tasks
