// Pairwise preference data for Bradley-Terry reward models and MaxMin-RLHF's mixture of them
// (MaxMin-RLHF: each comparison carries the annotator, so users can be clustered into
// sub-populations). A record {"prompt","chosen","rejected","user"} becomes two token sequences
// rendered with the same chat template as SFT (prompt as the user turn, the response as the
// assistant turn), the prompt length (identical for both: the prompt is tokenised on its own),
// and the dense index of the user (UserIndex: order of first appearance in the file).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "concord/data/jsonl.h"
#include "concord/data/records.h"
#include "concord/data/sft.h"
#include "concord/text/tokenizer.h"

namespace concord::data {

struct PreferenceOptions {
  std::string chat_template = "plain";
  /// Most tokens of one sequence (prompt + response).
  int64_t max_length = 1024;
  /// skip: drop a pair where either side is too long; truncate: cut the end of the long side,
  /// keeping the whole prompt (a pair whose prompt alone fills max_length is still dropped).
  TruncationPolicy truncation = TruncationPolicy::skip;
  /// Padding id; -1 = the tokenizer's pad id, else its EOS id, else 0.
  int64_t pad_id = -1;
  /// A record without a "user" key is a bad record (counted with its file and line) instead of
  /// a pair of the user "": what a mixture over users (reward_em) needs of its data.
  bool require_user = false;

  nlohmann::json to_json() const;
};

/// Right-padded batch; the reward is read at the last real token of each sequence.
struct PreferenceBatch {
  at::Tensor chosen_ids;       ///< [B, Tc] int64
  at::Tensor chosen_mask;      ///< [B, Tc] int64, 1 = real token
  at::Tensor rejected_ids;     ///< [B, Tr] int64
  at::Tensor rejected_mask;    ///< [B, Tr] int64
  at::Tensor prompt_lengths;   ///< [B] int64: tokens of the prompt (a prefix of both)
  at::Tensor chosen_lengths;   ///< [B] int64
  at::Tensor rejected_lengths; ///< [B] int64
  at::Tensor user_index;       ///< [B] int64
  at::Tensor margin;           ///< [B] fp32: the records' margins (0 when absent)
  at::Tensor group_index;      ///< [B] int64: planted group (-1 when the data has none)
};

struct PreferencePair {
  std::vector<text::TokenId> chosen;
  std::vector<text::TokenId> rejected;
  int64_t prompt_length = 0;
  int64_t user_index = 0;
  double margin = 0.0;
  int64_t group_index = -1;  ///< index into PreferenceDataset::groups(), -1 when absent
};

struct PreferenceStats {
  int64_t records = 0;
  int64_t pairs = 0;
  int64_t skipped_too_long = 0;
  int64_t truncated = 0;
  BadRecords bad;
  nlohmann::json to_json() const;
};

class PreferenceDataset {
 public:
  static PreferenceDataset from_records(const std::vector<PreferenceRecord>& records,
                                        const text::Tokenizer& tokenizer,
                                        const PreferenceOptions& options, UserIndex users);
  /// Reads `jsonl`; `users` (optional) gives indices to already-known users (new ones are
  /// appended, or with add_users false are bad records), so a second file keeps the
  /// numbering of the first.
  static PreferenceDataset from_jsonl(const std::filesystem::path& jsonl,
                                      const text::Tokenizer& tokenizer,
                                      const PreferenceOptions& options,
                                      const JsonlOptions& jsonl_options = {},
                                      const UserIndex* users = nullptr, bool add_users = true);

  /// Pairs already in token ids (synthetic studies, or data tokenised elsewhere); their
  /// user_index and group_index refer to `users` and `groups`.
  static PreferenceDataset from_pairs(std::vector<PreferencePair> pairs, UserIndex users,
                                      UserIndex groups, int64_t pad_id);

  int64_t size() const { return static_cast<int64_t>(pairs_.size()); }
  PreferenceBatch get_batch(const std::vector<int64_t>& indices) const;

  const std::vector<PreferencePair>& pairs() const { return pairs_; }
  const UserIndex& users() const { return users_; }
  /// Planted groups named by the records' "group" keys, in order of first appearance (empty
  /// when no record has one).
  const UserIndex& groups() const { return groups_; }
  const PreferenceStats& stats() const { return stats_; }
  int64_t pad_id() const { return pad_id_; }

 private:
  PreferenceOptions options_;
  int64_t pad_id_ = 0;
  std::vector<PreferencePair> pairs_;
  UserIndex users_;
  UserIndex groups_;
  PreferenceStats stats_;
};

}  // namespace concord::data
