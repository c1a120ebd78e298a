// Typed records of Concord's JSONL data sets (docs/architecture.md, "Formats") and their
// validation.
//
//   pretraining   {"text": str}
//   SFT           {"prompt": str, "completion": str}
//                 or {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
//   preferences   {"prompt": str, "chosen": str, "rejected": str, "user": str (optional)}
//   GRAPE pools   {"id": str|int, "instruction": str,
//                  "responses": [{"text": str, "source": str (optional)}, ...]}  (at least one)
//
// Keys not listed are ignored (data sets carry metadata). A missing key, a value of the wrong
// type or an empty GRAPE pool is a bad record: concord::FormatError "FILE:LINE: ...", handled by
// the reader's stop/skip policy. Strings are valid UTF-8 (the reader checks every line).
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/data/jsonl.h"

namespace concord::data {

struct TextRecord {
  std::string text;
};

struct ChatMessage {
  std::string role;  ///< "system", "user" or "assistant"
  std::string content;
};

/// An SFT example: either prompt/completion or a conversation (`messages` non-empty). The loss
/// covers the completion, or every assistant turn of a conversation.
struct SftRecord {
  std::string prompt;
  std::string completion;
  std::vector<ChatMessage> messages;

  bool is_chat() const { return !messages.empty(); }
  /// The conversation this record stands for: prompt/completion becomes one user turn and
  /// one assistant turn.
  std::vector<ChatMessage> conversation() const;
};

struct PreferenceRecord {
  std::string prompt;
  std::string chosen;
  std::string rejected;
  std::string user;        ///< annotator id as written in the file ("" when absent)
  int64_t user_index = 0;  ///< dense id of `user` (see UserIndex)
  /// How much more `chosen` is preferred (TRL's "margin" column; 0 when absent): the
  /// Bradley-Terry loss becomes -log sigmoid(r_chosen - r_rejected - margin).
  double margin = 0.0;
  /// The annotator's planted group, when the data has one (synthetic studies): EM reports its
  /// clusters' purity and NMI against it. "" when absent.
  std::string group;
};

struct GrapeResponse {
  std::string text;
  std::string source;  ///< the model (or person) that wrote it; "" when absent
  /// Sources of identical responses merged into this one by dedup_responses().
  std::vector<std::string> duplicate_sources;
};

struct GrapePool {
  std::string id;
  std::string instruction;
  std::vector<GrapeResponse> responses;
};

/// Validation of one parsed object; errors name `loc` and the key.
TextRecord parse_text_record(const nlohmann::json& object, const RecordLocation& loc);
SftRecord parse_sft_record(const nlohmann::json& object, const RecordLocation& loc);
/// Leaves user_index at 0; read_preference_records() assigns it. A record whose chosen or
/// rejected text is empty, or whose chosen and rejected texts are identical (no preference to
/// learn), fails with its location.
PreferenceRecord parse_preference_record(const nlohmann::json& object, const RecordLocation& loc);
GrapePool parse_grape_pool(const nlohmann::json& object, const RecordLocation& loc);

/// User ids to dense integers 0, 1, 2, ... in order of first appearance, so the numbering is
/// stable for a given file. Saved beside a model so that user k keeps meaning the same person.
class UserIndex {
 public:
  /// The index of `user`, adding it when new.
  int64_t add(const std::string& user);
  /// The index of `user`; -1 when unknown.
  int64_t find(const std::string& user) const;
  int64_t size() const { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }

  nlohmann::json to_json() const;  ///< the names in index order
  static UserIndex from_json(const nlohmann::json& names);

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, int64_t> index_;
};

/// Whole-file readers. `bad` (optional) receives the skipped lines under the skip policy.
std::vector<TextRecord> read_text_records(const std::filesystem::path& path,
                                          const JsonlOptions& options = {},
                                          BadRecords* bad = nullptr);
std::vector<SftRecord> read_sft_records(const std::filesystem::path& path,
                                        const JsonlOptions& options = {},
                                        BadRecords* bad = nullptr);
/// Fills `users` (when given; it may already hold names, which keep their indices) and sets
/// each record's user_index. With add_users false, a record of a user not in `users` is a bad
/// record (held-out data must come from the users a mixture was fitted to). With require_user,
/// so is a record without a "user" key (instead of a pair of the user "").
std::vector<PreferenceRecord> read_preference_records(
    const std::filesystem::path& path, const JsonlOptions& options = {}, BadRecords* bad = nullptr,
    UserIndex* users = nullptr, bool add_users = true, bool require_user = false);

/// The same, from a stream (`name` stands for the file in messages).
std::vector<SftRecord> read_sft_records(std::istream& in, const std::string& name,
                                        const JsonlOptions& options = {},
                                        BadRecords* bad = nullptr);

/// Which record type a JSONL file holds, for validation of any of them from one entry point
/// (the fuzzer, `concord data check`-style tools).
enum class RecordKind { text, sft, preference, grape_pool };
/// "text", "sft", "preference", "grape_pool"; anything else throws listing the valid names.
RecordKind record_kind_from_string(const std::string& name);

/// Reads and validates every line of `in` as `kind`; returns the number of good records.
int64_t validate_records(std::istream& in, const std::string& name, RecordKind kind,
                         const JsonlOptions& options = {}, BadRecords* bad = nullptr);

}  // namespace concord::data
