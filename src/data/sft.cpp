#include "concord/data/sft.h"

#include "concord/core/error.h"

namespace fs = std::filesystem;

namespace concord::data {

TruncationPolicy truncation_policy_from_string(const std::string& name) {
  if (name == "skip") return TruncationPolicy::skip;
  if (name == "truncate") return TruncationPolicy::truncate;
  fail("unknown truncation policy '", name, "' (valid: skip, truncate)");
}

const char* to_string(TruncationPolicy policy) {
  return policy == TruncationPolicy::skip ? "skip" : "truncate";
}

nlohmann::json SftOptions::to_json() const { return sft_options_schema().to_json(*this); }

const OptionsSchema<SftOptions>& sft_options_schema() {
  static const OptionsSchema<SftOptions> schema = [] {
    OptionsSchema<SftOptions> s("SFT data");
    s.field("chat_template", &SftOptions::chat_template, "registered chat template")
        .field("max_length", &SftOptions::max_length, "positions per sample and row",
               opt::at_least(2))
        .enum_field("truncation", &SftOptions::truncation,
                    {{"skip", TruncationPolicy::skip}, {"truncate", TruncationPolicy::truncate}},
                    "over-long samples are skipped or cut")
        .field("packing", &SftOptions::packing, "pack several samples per row")
        .field("pad_to_max_length", &SftOptions::pad_to_max_length,
               "pad every batch to max_length (static shapes)")
        .field("pad_id", &SftOptions::pad_id,
               "padding id (-1: the tokenizer's pad id, else its EOS id, else 0)",
               opt::at_least(-1));
    return s;
  }();
  return schema;
}

nlohmann::json SftStats::to_json() const {
  return {{"records", records},
          {"samples", samples},
          {"skipped_too_long", skipped_too_long},
          {"truncated", truncated},
          {"skipped_no_target", skipped_no_target},
          {"rows", rows},
          {"positions", positions},
          {"target_tokens", target_tokens},
          {"bad_records", bad.to_json()}};
}

bool SftDataset::make_sample(const TokenizedSample& tokens, const SftOptions& options,
                             Sample& out, SftStats& stats) {
  auto L = static_cast<int64_t>(tokens.ids.size());
  int64_t positions = std::max<int64_t>(L - 1, 0);
  if (positions > options.max_length) {
    if (options.truncation == TruncationPolicy::skip) {
      ++stats.skipped_too_long;
      return false;
    }
    positions = options.max_length;
  }
  out.inputs.assign(tokens.ids.begin(), tokens.ids.begin() + positions);
  out.targets.assign(static_cast<size_t>(positions), kIgnoreIndex);
  int64_t n_targets = 0;
  for (int64_t t = 0; t < positions; ++t) {
    auto next = static_cast<size_t>(t + 1);
    if (tokens.train[next]) {
      out.targets[static_cast<size_t>(t)] = tokens.ids[next];
      ++n_targets;
    }
  }
  if (n_targets == 0) {
    ++stats.skipped_no_target;
    return false;
  }
  if (positions < L - 1) ++stats.truncated;
  stats.positions += positions;
  stats.target_tokens += n_targets;
  return true;
}

SftDataset SftDataset::from_records(const std::vector<SftRecord>& records,
                                    const text::Tokenizer& tokenizer,
                                    const SftOptions& options) {
  CONCORD_CHECK(options.max_length > 0, "SFT max_length must be positive, got ",
                options.max_length);
  auto tmpl = make_chat_template(options.chat_template);
  SftDataset d;
  d.options_ = options;
  if (options.pad_id >= 0) {
    d.pad_id_ = options.pad_id;
  } else if (auto pad = tokenizer.pad_id()) {
    d.pad_id_ = *pad;
  } else if (auto eos = tokenizer.eos_id()) {
    d.pad_id_ = *eos;
  }
  d.stats_.records = static_cast<int64_t>(records.size());
  for (const auto& r : records) {
    Sample s;
    if (make_sample(tmpl->tokenize(tokenizer, r.conversation()), options, s, d.stats_)) {
      d.samples_.push_back(std::move(s));
    }
  }
  d.stats_.samples = static_cast<int64_t>(d.samples_.size());
  int64_t used = options.max_length;  // forces a new row for the first sample
  for (size_t i = 0; i < d.samples_.size(); ++i) {
    auto len = static_cast<int64_t>(d.samples_[i].inputs.size());
    if (!options.packing || used + len > options.max_length) {
      d.rows_.emplace_back();
      used = 0;
    }
    d.rows_.back().push_back(static_cast<int64_t>(i));
    used += len;
  }
  d.stats_.rows = static_cast<int64_t>(d.rows_.size());
  return d;
}

SftDataset SftDataset::from_jsonl(const fs::path& jsonl, const text::Tokenizer& tokenizer,
                                  const SftOptions& options, const JsonlOptions& jsonl_options) {
  BadRecords bad;
  std::vector<SftRecord> records = read_sft_records(jsonl, jsonl_options, &bad);
  SftDataset d = from_records(records, tokenizer, options);
  d.stats_.bad = bad;
  return d;
}

double SftDataset::packing_efficiency() const {
  if (rows_.empty()) return 0.0;
  return static_cast<double>(stats_.positions) /
         (static_cast<double>(rows_.size()) * static_cast<double>(options_.max_length));
}

SftBatch SftDataset::get_batch(const std::vector<int64_t>& indices) const {
  auto B = static_cast<int64_t>(indices.size());
  int64_t T = options_.pad_to_max_length ? options_.max_length : 0;
  for (int64_t i : indices) {
    CONCORD_CHECK(i >= 0 && i < size(), "SftDataset: item ", i, " out of range [0, ", size(),
                  ")");
    int64_t len = 0;
    for (int64_t s : rows_[static_cast<size_t>(i)]) {
      len += static_cast<int64_t>(samples_[static_cast<size_t>(s)].inputs.size());
    }
    T = std::max(T, len);
  }
  SftBatch b;
  b.input_ids = at::full({B, T}, pad_id_, at::kLong);
  b.targets = at::full({B, T}, kIgnoreIndex, at::kLong);
  b.attention_mask = at::zeros({B, T}, at::kLong);
  b.position_ids = at::zeros({B, T}, at::kLong);
  b.segment_ids = at::zeros({B, T}, at::kLong);
  int64_t* ids = b.input_ids.data_ptr<int64_t>();
  int64_t* tgt = b.targets.data_ptr<int64_t>();
  int64_t* mask = b.attention_mask.data_ptr<int64_t>();
  int64_t* pos = b.position_ids.data_ptr<int64_t>();
  int64_t* seg = b.segment_ids.data_ptr<int64_t>();
  for (int64_t r = 0; r < B; ++r) {
    int64_t col = 0, segment = 0;
    for (int64_t s : rows_[static_cast<size_t>(indices[static_cast<size_t>(r)])]) {
      const Sample& sample = samples_[static_cast<size_t>(s)];
      ++segment;
      for (size_t t = 0; t < sample.inputs.size(); ++t, ++col) {
        int64_t k = r * T + col;
        ids[k] = sample.inputs[t];
        tgt[k] = sample.targets[t];
        mask[k] = 1;
        pos[k] = static_cast<int64_t>(t);
        seg[k] = segment;
      }
    }
  }
  return b;
}

}  // namespace concord::data
