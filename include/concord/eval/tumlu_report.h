// TUMLU scores and reports. As in the paper (arXiv 2502.11020) and the benchmark's
// scripts/aggregate.py, a language's score is the unweighted mean of its subject accuracies
// (macro), by default over the headline subjects only (tumlu_data.h: is_headline); the micro
// average (all items pooled) is reported beside it. Scores are percentages, printed with two
// decimals. Per script: the mean of the language scores written in it; "native mean": the mean
// over the 8 native languages (the paper's "Mean" column).
//
// Confidence intervals: percentile bootstrap, resampling items with replacement within each
// subject (so every subject keeps its size and the macro average keeps its weights), one joint
// resample per model for subjects, languages and the native mean; seeded and deterministic.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/eval/tumlu_data.h"
#include "concord/eval/tumlu_outputs.h"

namespace concord::eval {

struct ReportOptions {
  /// Language scores over the headline subjects (true) or every subject (false).
  bool headline_only = true;
  int64_t bootstrap_resamples = 1000;  ///< 0: no intervals
  uint64_t seed = 0;
  double confidence = 0.95;
};

struct Interval {
  double low = 0.0, high = 0.0;
};

struct SubjectScore {
  std::string file_stem;
  std::string name;  ///< canonical subject name, or the file stem for an unknown subject
  bool headline = false;
  bool known = false;  ///< maps to a canonical subject
  int64_t n = 0, correct = 0, extracted = 0;
  double accuracy = 0.0;  ///< percent; 0 when n == 0
  Interval ci;
  std::optional<double> accuracy_norm;  ///< acc_norm (log-likelihood protocol)
};

struct LanguageScore {
  const TumluLanguage* language = nullptr;
  std::vector<SubjectScore> subjects;  ///< every subject file found
  int subjects_used = 0;               ///< subjects in the macro average
  int64_t n = 0;                       ///< items in those subjects
  double macro = 0.0, micro = 0.0;     ///< percent
  Interval macro_ci, micro_ci;
  std::optional<double> macro_norm;
};

struct ModelScores {
  std::string protocol, model;
  std::vector<LanguageScore> languages;   ///< in tumlu_languages() order
  std::map<std::string, double> scripts;  ///< "Latin" -> mean of its languages' macro scores
  std::optional<double> native_mean;      ///< over the native languages present
  Interval native_ci;
  int native_languages = 0;

  const LanguageScore* language(const std::string& folder) const;
};

/// Scores one model's subject outcomes (any languages, any subjects).
ModelScores score_model(const std::string& protocol, const std::string& model,
                        const std::vector<SubjectOutcome>& outcomes, const ReportOptions& options);

/// Reads every outputs file under `root` (find_tumlu_outputs), grades each record with the
/// named extractor and scores each (protocol, model) found.
std::vector<ModelScores> score_outputs_folder(const std::filesystem::path& root,
                                              const std::string& extractor,
                                              const ReportOptions& options);

/// results.json: every number above, per model.
nlohmann::json results_json(const std::vector<ModelScores>& models, const ReportOptions& options,
                            const std::string& extractor);

/// The paper's table: rows models, columns the native-language mean and each language found
/// (native codes first, then transliterated copies such as kaz-Latn), two decimals.
std::string markdown_language_table(const std::vector<ModelScores>& models);
/// Rows models, columns Latin / Cyrillic / Arabic.
std::string markdown_script_table(const std::vector<ModelScores>& models);
/// One model: rows subjects (canonical), columns languages, with n and the 95% interval.
std::string markdown_subject_table(const ModelScores& model);

/// Writes results.json, report.md and charts/tumlu_<protocol>_<model>.png (per-language bars
/// with interval whiskers) into `dir`.
void write_tumlu_report(const std::filesystem::path& dir, const std::vector<ModelScores>& models,
                        const ReportOptions& options, const std::string& extractor);

/// Percentile of sorted values with linear interpolation (numpy's default), q in [0, 1].
double percentile(const std::vector<double>& sorted, double q);

}  // namespace concord::eval
