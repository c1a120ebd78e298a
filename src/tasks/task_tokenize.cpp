#include "task_tokenize.h"

#include <filesystem>

#include "concord/data/token_shard.h"
#include "concord/text/tokenizer.h"

namespace concord::tasks {

Task tokenize_task() {
  Task t;
  t.summary = "Tokenise a JSONL corpus of {\"text\"} records into memory-mappable token shards";
  t.schema = [] {
    ConfigSchema s;
    s.required("input", ConfigType::String, "JSONL file of {\"text\"} records")
        .optional("tokenizer", ConfigType::String, "bytes",
                  "tokenizer.json, a SentencePiece .model, a model folder, or 'bytes'")
        .optional("shard_prefix", ConfigType::String, "shards/train",
                  "shard path prefix, relative to the run folder")
        .optional("tokens_per_shard", ConfigType::Int, 100000000, "tokens per shard at most");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    auto tokenizer = text::load_tokenizer(config["tokenizer"].get<std::string>());
    const auto prefix = dir.file(config["shard_prefix"].get<std::string>());
    std::filesystem::create_directories(prefix.parent_path());
    auto shards = data::tokenize_jsonl_to_shards(config["input"].get<std::string>(), *tokenizer,
                                                 prefix.string(),
                                                 config["tokens_per_shard"].get<int64_t>());
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
