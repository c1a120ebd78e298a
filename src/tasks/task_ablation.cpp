#include "task_ablation.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "ablation_report.h"
#include "concord/tasks/text_input.h"
#include "concord/core/error.h"
#include "concord/core/options.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/fortune.h"
#include "concord/data/jsonl.h"
#include "concord/data/pretrain.h"
#include "concord/lm/model_config.h"
#include "concord/text/tokenizer.h"
#include "concord/train/ablation.h"

namespace concord::tasks {

namespace {

// The `data` section: the corpus.
struct AblationCorpus {
  std::string format = "fortune";
  std::string train = "/usr/share/games/fortunes";
  int64_t eval_every_nth = 10;
  int64_t block_size = 128;
  int64_t builtin_documents = 3000;
};

struct AblationTaskOptions {
  std::string model;
  std::vector<std::string> variants = {"vanilla", "siaf", "as", "siaf+as"};
  std::vector<uint64_t> seeds = {1, 2, 3};
  std::string tokenizer = "bytes";
  int64_t batch_size = 16;
  int64_t diversity_sequences = 32;
  int64_t latency_batch = 4;
  int64_t latency_repeats = 20;
  int64_t latency_rounds = 5;
  AblationCorpus data;
  train::TrainerOptions train;
};

const OptionsSchema<AblationTaskOptions>& ablation_options_schema() {
  static const OptionsSchema<AblationTaskOptions> schema = [] {
    OptionsSchema<AblationCorpus> corpus("corpus");
    corpus.field("format", &AblationCorpus::format,
               "fortune: fortune(6) files (Debian package fortunes); jsonl: {\"text\"} records; "
               "builtin: Concord's generated corpus",
               opt::one_of({"fortune", "jsonl", "builtin"}))
        .field("train", &AblationCorpus::train, "file or folder")
        .field("eval_every_nth", &AblationCorpus::eval_every_nth,
               "every n-th document is held out for validation (interleaved, so every source "
               "file is represented on both sides)",
               opt::at_least(2))
        .field("block_size", &AblationCorpus::block_size, "tokens per row", opt::at_least(1))
        .field("builtin_documents", &AblationCorpus::builtin_documents,
               "documents for format builtin", opt::at_least(1));
    OptionsSchema<AblationTaskOptions> s("pangu_ablation task");
    s.field("model", &AblationTaskOptions::model,
            "a PanGu-pi model config (SIAF and augmented shortcuts on); the variants derive from it",
            opt::required())
        .field("variants", &AblationTaskOptions::variants,
               "variants, the first is the latency baseline")
        .field("seeds", &AblationTaskOptions::seeds, "a training run per seed")
        .field("tokenizer", &AblationTaskOptions::tokenizer, "tokenizer.json, .model, or 'bytes'")
        .field("batch_size", &AblationTaskOptions::batch_size, "rows per step", opt::at_least(1))
        .field("diversity_sequences", &AblationTaskOptions::diversity_sequences,
               "validation blocks measured for d_M", opt::at_least(1))
        .field("latency_batch", &AblationTaskOptions::latency_batch,
               "rows of the timed forward pass", opt::at_least(1))
        .field("latency_repeats", &AblationTaskOptions::latency_repeats,
               "timed forward passes a round per variant (median)", opt::at_least(1))
        .field("latency_rounds", &AblationTaskOptions::latency_rounds,
               "interleaved rounds (order alternating, fresh weight copies; median and range "
               "reported)", opt::at_least(1))
        .section("data", &AblationTaskOptions::data, corpus, "the corpus")
        .section("train", &AblationTaskOptions::train, train::trainer_options_schema(),
                 "optimisation, the same for every run");
    return s;
  }();
  return schema;
}

// The documents of the configured corpus.
std::vector<std::string> read_corpus(const AblationCorpus& d, uint64_t seed) {
  if (d.format == "builtin") return data::builtin_corpus(d.builtin_documents, seed);
  if (d.format == "fortune") return data::read_fortunes(d.train);
  return read_jsonl_texts(d.train);
}

}  // namespace

Task pangu_ablation_task() {
  Task t;
  t.summary = "PanGu-pi architecture ablation: Vanilla / SIAF / AS / SIAF+AS of equal size, "
              "several seeds; validation loss, per-layer feature diversity, forward latency";
  t.schema = [] { return ablation_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const AblationTaskOptions ao = ablation_options_schema().read(config);
    const AblationCorpus& d = ao.data;
    const auto tokenizer = text::load_tokenizer(ao.tokenizer);
    const lm::ModelConfig pangu = lm::load_any_model_config(ao.model);
    const auto variants = train::pangu_ablation_variants(pangu, ao.variants);
    CONCORD_CHECK(tokenizer->vocab_size() <= pangu.vocab_size, "the tokenizer has ",
                  tokenizer->vocab_size(), " tokens, more than the model's vocab_size ",
                  pangu.vocab_size);

    const auto documents = read_corpus(d, config["seed"].get<uint64_t>());
    const int64_t nth = d.eval_every_nth;
    std::vector<std::string> train_docs, eval_docs;
    for (size_t i = 0; i < documents.size(); ++i) {
      (static_cast<int64_t>(i % static_cast<size_t>(nth)) == nth - 1 ? eval_docs : train_docs)
          .push_back(documents[i]);
    }
    const int64_t block = d.block_size;
    CONCORD_CHECK(block > 0 && block <= pangu.max_position_embeddings,
                  "data.block_size must be in [1, max_position_embeddings]");
    const auto train_set = data::PretrainDataset::from_texts(train_docs, *tokenizer, block);
    const auto eval_set = data::PretrainDataset::from_texts(eval_docs, *tokenizer, block);

    train::AblationOptions o;
    o.train = ao.train;
    o.batch_size = ao.batch_size;
    o.seeds = ao.seeds;
    o.diversity_sequences = ao.diversity_sequences;
    o.latency_batch = ao.latency_batch;
    o.latency_repeats = ao.latency_repeats;
    o.latency_rounds = ao.latency_rounds;
    const auto results = train::run_ablation(variants, train_set, eval_set, o,
                                             [](const std::string& v, uint64_t seed) {
                                               spdlog::info("ablation: {} seed {}", v, seed);
                                             });
    report.paragraph(fmt::format(
        "Corpus `{}` ({}): {} documents, {} for training ({} tokens, {} blocks of {}), {} held out "
        "({} blocks). Each run: {} steps of {} rows, peak lr {}, {} warm-up, {} decay.",
        d.train, d.format, documents.size(),
        train_docs.size(), train_set.num_tokens(), train_set.size(), block, eval_docs.size(),
        eval_set.size(), o.train.max_steps, o.batch_size, o.train.optimizer.lr,
        o.train.warmup_steps, o.train.lr_schedule));
    report_ablation(results, dir, report);
  };
  return t;
}

}  // namespace concord::tasks
