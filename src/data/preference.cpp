#include "concord/data/preference.h"

#include "concord/core/error.h"
#include "concord/data/collate.h"

namespace fs = std::filesystem;

namespace concord::data {

nlohmann::json PreferenceOptions::to_json() const {
  return {{"chat_template", chat_template},
          {"max_length", max_length},
          {"truncation", to_string(truncation)},
          {"pad_id", pad_id},
          {"require_user", require_user}};
}

nlohmann::json PreferenceStats::to_json() const {
  return {{"records", records}, {"pairs", pairs}, {"skipped_too_long", skipped_too_long},
          {"truncated", truncated}, {"bad_records", bad.to_json()}};
}

PreferenceDataset PreferenceDataset::from_records(const std::vector<PreferenceRecord>& records,
                                                  const text::Tokenizer& tokenizer,
                                                  const PreferenceOptions& options,
                                                  UserIndex users) {
  CONCORD_CHECK(options.max_length > 0, "preference max_length must be positive, got ",
                options.max_length);
  auto tmpl = make_chat_template(options.chat_template);
  PreferenceDataset d;
  d.options_ = options;
  d.users_ = std::move(users);
  if (options.pad_id >= 0) {
    d.pad_id_ = options.pad_id;
  } else if (auto pad = tokenizer.pad_id()) {
    d.pad_id_ = *pad;
  } else if (auto eos = tokenizer.eos_id()) {
    d.pad_id_ = *eos;
  }
  d.stats_.records = static_cast<int64_t>(records.size());
  const auto max_len = static_cast<size_t>(options.max_length);
  for (const auto& r : records) {
    TokenizedSample chosen = tmpl->tokenize(tokenizer, {{"user", r.prompt}, {"assistant", r.chosen}});
    TokenizedSample rejected =
        tmpl->tokenize(tokenizer, {{"user", r.prompt}, {"assistant", r.rejected}});
    int64_t prompt_length = chosen.prompt_length();
    // The prompt is tokenised as its own piece, so both sides share it token for token.
    CONCORD_CHECK(rejected.prompt_length() == prompt_length,
                  "preference pair: prompt tokenised differently for chosen and rejected");
    bool too_long = chosen.ids.size() > max_len || rejected.ids.size() > max_len;
    if (too_long && (options.truncation == TruncationPolicy::skip ||
                     prompt_length >= options.max_length)) {
      ++d.stats_.skipped_too_long;
      continue;
    }
    if (too_long) {
      ++d.stats_.truncated;
      if (chosen.ids.size() > max_len) chosen.ids.resize(max_len);
      if (rejected.ids.size() > max_len) rejected.ids.resize(max_len);
    }
    PreferencePair pair;
    pair.chosen = std::move(chosen.ids);
    pair.rejected = std::move(rejected.ids);
    pair.prompt_length = prompt_length;
    pair.user_index = r.user_index;
    pair.margin = r.margin;
    if (!r.group.empty()) pair.group_index = d.groups_.add(r.group);
    d.pairs_.push_back(std::move(pair));
  }
  d.stats_.pairs = static_cast<int64_t>(d.pairs_.size());
  return d;
}

PreferenceDataset PreferenceDataset::from_jsonl(const fs::path& jsonl,
                                                const text::Tokenizer& tokenizer,
                                                const PreferenceOptions& options,
                                                const JsonlOptions& jsonl_options,
                                                const UserIndex* users, bool add_users) {
  UserIndex index = users ? *users : UserIndex{};
  BadRecords bad;
  std::vector<PreferenceRecord> records =
      read_preference_records(jsonl, jsonl_options, &bad, &index, add_users, options.require_user);
  PreferenceDataset d = from_records(records, tokenizer, options, std::move(index));
  d.stats_.bad = bad;
  return d;
}

PreferenceDataset PreferenceDataset::from_pairs(std::vector<PreferencePair> pairs, UserIndex users,
                                                UserIndex groups, int64_t pad_id) {
  PreferenceDataset d;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto& p = pairs[i];
    CONCORD_CHECK(!p.chosen.empty() && !p.rejected.empty(), "preference pair ", i, " is empty");
    CONCORD_CHECK(p.user_index >= 0 && p.user_index < users.size(), "preference pair ", i,
                  ": user ", p.user_index, " outside the ", users.size(), " users");
    CONCORD_CHECK(p.group_index < groups.size(), "preference pair ", i, ": group ",
                  p.group_index, " outside the ", groups.size(), " groups");
  }
  d.pad_id_ = pad_id;
  d.pairs_ = std::move(pairs);
  d.users_ = std::move(users);
  d.groups_ = std::move(groups);
  d.stats_.records = d.stats_.pairs = static_cast<int64_t>(d.pairs_.size());
  return d;
}

PreferenceBatch PreferenceDataset::get_batch(const std::vector<int64_t>& indices) const {
  std::vector<std::vector<text::TokenId>> chosen, rejected;
  auto B = static_cast<int64_t>(indices.size());
  PreferenceBatch b;
  b.prompt_lengths = at::empty({B}, at::kLong);
  b.user_index = at::empty({B}, at::kLong);
  b.margin = at::empty({B}, at::kFloat);
  b.group_index = at::empty({B}, at::kLong);
  for (int64_t k = 0; k < B; ++k) {
    int64_t i = indices[static_cast<size_t>(k)];
    CONCORD_CHECK(i >= 0 && i < size(), "PreferenceDataset: item ", i, " out of range [0, ",
                  size(), ")");
    const auto& p = pairs_[static_cast<size_t>(i)];
    chosen.push_back(p.chosen);
    rejected.push_back(p.rejected);
    b.prompt_lengths.data_ptr<int64_t>()[k] = p.prompt_length;
    b.user_index.data_ptr<int64_t>()[k] = p.user_index;
    b.margin.data_ptr<float>()[k] = static_cast<float>(p.margin);
    b.group_index.data_ptr<int64_t>()[k] = p.group_index;
  }
  PaddedBatch c = pad_sequences(chosen, pad_id_, PadSide::right);
  PaddedBatch r = pad_sequences(rejected, pad_id_, PadSide::right);
  b.chosen_ids = c.ids;
  b.chosen_mask = c.attention_mask;
  b.chosen_lengths = c.lengths;
  b.rejected_ids = r.ids;
  b.rejected_mask = r.attention_mask;
  b.rejected_lengths = r.lengths;
  return b;
}

}  // namespace concord::data
