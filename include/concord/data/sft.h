// Supervised fine-tuning data: prompt/completion or chat records rendered with a chat template
// (chat_template.h), the loss only on completion / assistant tokens, optional packing.
//
// A rendered sample of L tokens s[0..L) with trainable flags m[0..L) gives L - 1 positions:
//   inputs[t] = s[t],  targets[t] = m[t+1] ? s[t+1] : -100,   t = 0 .. L-2
// (targets are already shifted, as in PretrainDataset). `max_length` bounds the positions of a
// sample and of a row. An over-long sample is skipped or cut at the end, as the truncation
// policy says, and counted either way; a sample left with no target is dropped and counted.
//
// Packing (next-fit, in data order): samples are laid one after another in a row while they fit
// in max_length positions. Within a row, segment_ids are 1, 2, ... per sample (0 on padding) and
// position_ids restart at 0 for each sample; block_causal_mask(segment_ids) (collate.h) keeps
// samples from attending to each other, and no target crosses a sample boundary, so a packed
// row gives the same loss terms as its samples one by one.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/data/chat_template.h"
#include "concord/data/jsonl.h"
#include "concord/data/records.h"
#include "concord/text/tokenizer.h"

namespace concord::data {

/// What to do with a sample longer than max_length.
enum class TruncationPolicy {
  skip,      ///< drop it (counted in stats)
  truncate,  ///< keep its first max_length positions (counted in stats)
};
/// "skip" or "truncate"; anything else throws listing the valid names.
TruncationPolicy truncation_policy_from_string(const std::string& name);
const char* to_string(TruncationPolicy policy);

/// The ignored-target value (PyTorch's cross_entropy ignore_index default).
inline constexpr int64_t kIgnoreIndex = -100;

struct SftOptions {
  /// Registered chat template (chat_template.h).
  std::string chat_template = "plain";
  /// Positions per sample and per row (the model's context T).
  int64_t max_length = 1024;
  TruncationPolicy truncation = TruncationPolicy::skip;
  /// Pack several samples into each row.
  bool packing = false;
  /// Pad every batch to max_length instead of its longest row (static shapes).
  bool pad_to_max_length = false;
  /// Padding id for input_ids; -1 = the tokenizer's pad id, else its EOS id, else 0.
  int64_t pad_id = -1;

  nlohmann::json to_json() const;  ///< sft_options_schema().to_json(*this)
};

/// The keys of SftOptions, declared once: chat_template, max_length (>= 2), truncation (skip,
/// truncate), packing, pad_to_max_length, pad_id (>= -1).
const OptionsSchema<SftOptions>& sft_options_schema();

struct SftStats {
  int64_t records = 0;            ///< valid records read
  int64_t samples = 0;            ///< samples kept
  int64_t skipped_too_long = 0;   ///< dropped by TruncationPolicy::skip
  int64_t truncated = 0;          ///< cut by TruncationPolicy::truncate
  int64_t skipped_no_target = 0;  ///< no trainable token left
  int64_t rows = 0;               ///< items of the data set (rows when packing, else samples)
  int64_t positions = 0;          ///< sum of sample lengths (positions)
  int64_t target_tokens = 0;      ///< positions with a target
  BadRecords bad;                 ///< bad JSONL lines (skip policy)

  nlohmann::json to_json() const;
};

/// A batch of rows, all [B, T] int64.
struct SftBatch {
  at::Tensor input_ids;       ///< padding = pad id
  at::Tensor targets;         ///< -100 on prompt tokens and padding
  at::Tensor attention_mask;  ///< 1 on real positions
  at::Tensor position_ids;    ///< restart at 0 for each sample
  at::Tensor segment_ids;     ///< 1, 2, ... per sample in the row; 0 on padding
};

class SftDataset {
 public:
  struct Sample {
    std::vector<text::TokenId> inputs;
    std::vector<int64_t> targets;  ///< same length as inputs; kIgnoreIndex where no loss
  };

  static SftDataset from_records(const std::vector<SftRecord>& records,
                                 const text::Tokenizer& tokenizer, const SftOptions& options);
  static SftDataset from_jsonl(const std::filesystem::path& jsonl,
                               const text::Tokenizer& tokenizer, const SftOptions& options,
                               const JsonlOptions& jsonl_options = {});

  /// Number of items: rows when packing, samples otherwise.
  int64_t size() const { return static_cast<int64_t>(rows_.size()); }
  /// Rows of the given item indices, padded on the right.
  SftBatch get_batch(const std::vector<int64_t>& indices) const;

  const std::vector<Sample>& samples() const { return samples_; }
  /// Sample indices of each row (one each without packing).
  const std::vector<std::vector<int64_t>>& rows() const { return rows_; }
  const SftStats& stats() const { return stats_; }
  const SftOptions& options() const { return options_; }
  int64_t pad_id() const { return pad_id_; }
  /// Real positions / (rows x max_length): the share of a fixed-shape batch that is not padding.
  double packing_efficiency() const;

  /// Turns one tokenised conversation into a sample under `options`; false (and the matching
  /// stats counter incremented) when it is dropped.
  static bool make_sample(const TokenizedSample& tokens, const SftOptions& options,
                          Sample& out, SftStats& stats);

 private:
  SftOptions options_;
  int64_t pad_id_ = 0;
  std::vector<Sample> samples_;
  std::vector<std::vector<int64_t>> rows_;
  SftStats stats_;
};

}  // namespace concord::data
