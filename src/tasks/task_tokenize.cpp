#include "task_tokenize.h"

#include <filesystem>

#include "concord/core/options.h"
#include "concord/data/token_shard.h"
#include "concord/text/tokenizer.h"

namespace concord::tasks {

namespace {

struct TokenizeOptions {
  std::string input;
  std::string tokenizer = "bytes";
  std::string shard_prefix = "shards/train";
  int64_t tokens_per_shard = 100000000;
};

const OptionsSchema<TokenizeOptions>& tokenize_options_schema() {
  static const OptionsSchema<TokenizeOptions> schema = [] {
    OptionsSchema<TokenizeOptions> s("tokenize task");
    s.field("input", &TokenizeOptions::input, "JSONL file of {\"text\"} records", opt::required())
        .field("tokenizer", &TokenizeOptions::tokenizer,
               "tokenizer.json, a SentencePiece .model, a model folder, or 'bytes'")
        .field("shard_prefix", &TokenizeOptions::shard_prefix,
               "shard path prefix, relative to the run folder")
        .field("tokens_per_shard", &TokenizeOptions::tokens_per_shard, "tokens per shard at most",
               opt::at_least(1));
    return s;
  }();
  return schema;
}

}  // namespace

Task tokenize_task() {
  Task t;
  t.summary = "Tokenise a JSONL corpus of {\"text\"} records into memory-mappable token shards";
  t.schema = [] { return tokenize_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const TokenizeOptions o = tokenize_options_schema().read(config);
    auto tokenizer = text::load_tokenizer(o.tokenizer);
    const auto prefix = dir.file(o.shard_prefix, "shard_prefix");
    std::filesystem::create_directories(prefix.parent_path());
    auto shards = data::tokenize_jsonl_to_shards(o.input, *tokenizer, prefix.string(),
                                                 o.tokens_per_shard);
    int64_t tokens = 0;
    std::vector<std::vector<std::string>> rows;
    for (const auto& p : shards) {
      data::TokenShard shard(p);
      tokens += shard.size();
      rows.push_back({std::filesystem::relative(p, dir.path()).string(), std::to_string(shard.size()),
                      std::to_string(shard.token_bytes() * 8) + "-bit"});
    }
    dir.metrics().log_json({{"step", 0}, {"data/tokens", tokens}, {"data/shards", shards.size()}});
    report.heading("Shards").table({"shard", "tokens", "width"}, rows);
    report.paragraph("Total: " + std::to_string(tokens) + " tokens, vocabulary " +
                     std::to_string(tokenizer->vocab_size()) + ".");
  };
  return t;
}

}  // namespace concord::tasks
