#include "stage_data.h"

#include <fmt/format.h>

#include <algorithm>

#include "concord/core/error.h"
#include "concord/core/plot.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/jsonl.h"
#include "concord/data/pretrain.h"
#include "concord/data/token_shard.h"
#include "concord/text/byte_tokenizer.h"

namespace concord::tasks {

Stage data_stage() {
  Stage s;
  s.name = "data";
  s.what = "built-in corpus -> JSONL -> byte tokenizer -> token shards -> 128-token blocks";
  s.shows = "the data path every training task reads: how many documents, tokens and blocks come "
            "out, and their length distribution";
  s.run = [](RunDirectory& dir) {
    constexpr int64_t kDocuments = 2000;
    constexpr int64_t kBlock = 128;
    dir.write_config({{"stage", "data"}, {"documents", kDocuments}, {"block_size", kBlock},
                      {"tokenizer", "bytes"}, {"corpus_seed", 1234}});
    const auto docs = data::builtin_corpus(kDocuments);
    std::vector<nlohmann::json> records;
    records.reserve(docs.size());
    for (const auto& d : docs) records.push_back({{"text", d}});
    const auto corpus = dir.file("corpus.jsonl");
    data::write_jsonl(corpus, records);

    text::ByteTokenizer tokenizer;
    const auto shards = data::tokenize_jsonl_to_shards(corpus, tokenizer,
                                                       dir.file("shards/train").string(), 1 << 20);
    auto dataset = data::PretrainDataset::from_shards(shards, kBlock);

    // The stream must be the documents' bytes, each followed by EOS: check the first block.
    const auto first = dataset.block(0);
    const std::string expected = docs[0].substr(0, std::min<size_t>(docs[0].size(), kBlock + 1));
    for (size_t i = 0; i < expected.size(); ++i) {
      CONCORD_CHECK(first[i] == static_cast<unsigned char>(expected[i]),
                    "data stage: block 0 differs from the corpus at byte ", i);
    }

    std::vector<double> lengths;
    for (const auto& d : docs) lengths.push_back(static_cast<double>(d.size()));
    const double mean = [&] { double t = 0; for (double l : lengths) t += l; return t / lengths.size(); }();
    // Histogram of document lengths in 8 equal bins.
    const double lo = *std::min_element(lengths.begin(), lengths.end());
    const double hi = *std::max_element(lengths.begin(), lengths.end()) + 1;
    std::vector<double> counts(8, 0);
    std::vector<std::string> labels;
    for (double l : lengths) counts[static_cast<size_t>((l - lo) / (hi - lo) * 8)] += 1;
    for (int b = 0; b < 8; ++b) labels.push_back(fmt::format("{:.0f}", lo + (hi - lo) * (b + 0.5) / 8));
    plot_bars(dir.chart("document_lengths.png"), {"document length (bytes), bin centres", "", "documents"},
              labels, counts);

    dir.metrics().log_json({{"step", 0},
                            {"data/documents", kDocuments},
                            {"data/tokens", dataset.num_tokens()},
                            {"data/blocks", dataset.size()}});
    Report report("quickstart: data");
    report.paragraph("The built-in corpus (`concord::data::builtin_corpus`, procedurally generated, "
                     "deterministic) written as JSONL, tokenised with the byte tokenizer into "
                     "memory-mapped token shards, and packed into blocks for next-token training.");
    report.table({"documents", "tokens (EOS included)", "mean document bytes", "block size", "blocks"},
                 {{std::to_string(kDocuments), std::to_string(dataset.num_tokens()), fixed(mean, 1),
                   std::to_string(kBlock), std::to_string(dataset.size())}});
    report.paragraph("First document: \"" + docs[0] + "\"");
    report.image("document lengths", "charts/document_lengths.png");
    report.write(dir.file("report.md"));
    return fmt::format("{} documents, {} tokens, {} blocks of {}", kDocuments,
                       dataset.num_tokens(), dataset.size(), kBlock);
  };
  return s;
}

}  // namespace concord::tasks
