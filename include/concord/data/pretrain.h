// Language-model pretraining data: documents become one token stream (each document followed
// by the EOS id, so the model learns where documents end), cut into blocks of block_size + 1
// tokens. Block i is stream[i*T, i*T + T + 1) with T = block_size: its first T tokens are the
// inputs and its last T the targets (inputs shifted by one), and consecutive blocks share one
// token, so every token of the stream is a target exactly once (as llm.c's loader). A stream of
// N tokens gives floor((N - 1) / T) blocks; the tail that does not fill a block is dropped.
//
// The stream lives in memory (tokenised from JSONL) or in pre-tokenised shards (token_shard.h),
// one stream per shard, memory-mapped, so a corpus larger than RAM costs nothing to open.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/data/jsonl.h"
#include "concord/text/tokenizer.h"

namespace concord::data {

/// A batch for next-token prediction. targets[b, t] is the token that follows input_ids[b, t]
/// (-100 where no loss is taken; Concord's convention for every data set).
struct LmBatch {
  at::Tensor input_ids;  ///< [B, T] int64
  at::Tensor targets;    ///< [B, T] int64
};

class PretrainDataset {
 public:
  /// Tokenises the {"text"} records of `jsonl` (streamed; bad lines follow `options`).
  static PretrainDataset from_jsonl(const std::filesystem::path& jsonl,
                                    const text::Tokenizer& tokenizer, int64_t block_size,
                                    const JsonlOptions& options = {}, BadRecords* bad = nullptr);
  /// Tokenises `documents`.
  static PretrainDataset from_texts(const std::vector<std::string>& documents,
                                    const text::Tokenizer& tokenizer, int64_t block_size);
  /// Uses `tokens` as the stream (already tokenised, EOS ids included).
  static PretrainDataset from_tokens(std::vector<text::TokenId> tokens, int64_t block_size);
  /// Memory-maps pre-tokenised shards; each shard is its own stream (blocks never span two).
  static PretrainDataset from_shards(const std::vector<std::filesystem::path>& shards,
                                     int64_t block_size);

  /// Number of blocks.
  int64_t size() const { return offsets_.empty() ? 0 : offsets_.back(); }
  int64_t block_size() const { return block_size_; }
  /// Tokens in all streams.
  int64_t num_tokens() const;

  /// The block_size + 1 tokens of block `i`.
  std::vector<int64_t> block(int64_t i) const;
  /// input_ids/targets of the given blocks, [indices.size(), block_size].
  LmBatch get_batch(const std::vector<int64_t>& indices) const;

  nlohmann::json to_json() const;

  struct Source;  // one token stream (in memory or a mapped shard)

 private:
  PretrainDataset(std::vector<std::shared_ptr<const Source>> sources, int64_t block_size);
  void read_block(int64_t i, int64_t* out) const;

  std::vector<std::shared_ptr<const Source>> sources_;
  std::vector<int64_t> offsets_;  ///< offsets_[k] = blocks in sources 0..k (inclusive)
  int64_t block_size_ = 0;
};

}  // namespace concord::data
