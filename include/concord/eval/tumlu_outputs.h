// Stored TUMLU generations in the benchmark's layout (github.com/ceferisbarov/TUMLU,
// scripts/fewshot.py and scripts/CoT.py):
//
//   <root>/<language>/outputs/<protocol>/<model>/<Subject>.json
//
// where <model> may hold '/' ("Qwen/Qwen2.5-7B-Instruct" is two folders) and each file is a JSON
// array with one object per test item, in the benchmark's field names:
//
//   {"description": shots, "question": str, "choices": [shown order], "output": str,
//    "answer": gold letter in shown order, "system": shots, "input": test prompt}
//
// Concord adds "prediction" (the letter its extractor read, or null), "index" (the item's line
// in the test file, 0-based), "subject" (canonical name) and "order" (stored index of each shown
// option); the log-likelihood protocol adds "loglik" and "loglik_norm" (one score per option).
// Readers need only question/choices/output/answer, so files written by the benchmark's own
// scripts score the same way.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/eval/answer_extraction.h"
#include "concord/eval/tumlu_data.h"

namespace concord::eval {

struct TumluRecord {
  std::string question;
  std::vector<std::string> choices;
  std::string output;
  std::string answer;  ///< gold letter, in the order of `choices`
  std::string system;  ///< the exemplars ("" when the writer did not store them)
  std::string input;   ///< the test item's prompt
  std::optional<std::string> prediction;
  int64_t index = -1;
  std::string subject;
  std::vector<int> order;
  std::vector<double> loglik, loglik_norm;  ///< log-likelihood protocol only

  nlohmann::json to_json() const;
  /// `where` names the file and element for errors ("F.json: [3]").
  static TumluRecord from_json(const nlohmann::json& j, const std::string& where);
};

/// Reads a subject file. Not a JSON array of objects with string "output" and "answer" and an
/// array "choices": concord::FormatError naming the file and the element ("F: [12].output: ...").
/// Files over 256 MiB are refused rather than read.
std::vector<TumluRecord> read_tumlu_outputs(const std::filesystem::path& file);

/// Writes a subject file atomically (temporary file + rename), 4-space indented UTF-8 as the
/// benchmark's json.dump(..., ensure_ascii=False, indent=4).
void write_tumlu_outputs(const std::filesystem::path& file, const std::vector<TumluRecord>& records);

/// <root>/<language>/outputs/<protocol>/<model>/<file_stem>.json; `model` is checked to be a
/// relative path without "." or ".." parts.
std::filesystem::path tumlu_output_path(const std::filesystem::path& root,
                                        const std::string& language, const std::string& protocol,
                                        const std::string& model, const std::string& file_stem);

struct TumluOutputFile {
  std::string language;   ///< folder name
  std::string protocol;   ///< "generative", "no_cot_instruct", ...
  std::string model;      ///< relative folder, '/'-separated
  std::string file_stem;  ///< subject file name without ".json"
  std::filesystem::path path;
};

/// Every subject file under `root` (a folder of language folders, like the benchmark's data/),
/// sorted; folders whose name is not a TUMLU language and hidden folders (".shards") are passed
/// over. `root` may also be a single language folder.
std::vector<TumluOutputFile> find_tumlu_outputs(const std::filesystem::path& root);

/// How one subject's items came out.
struct SubjectOutcome {
  std::string language;   ///< folder
  std::string file_stem;
  std::optional<TumluSubject> subject;  ///< nullopt for a name the benchmark does not use
  std::vector<uint8_t> correct;         ///< one per item
  std::vector<uint8_t> correct_norm;    ///< acc_norm (log-likelihood protocol), else empty
  int64_t extracted = 0;                ///< items where a letter was read
};

/// Scores records: a record with "loglik" scores is graded by their argmax (and acc_norm by
/// "loglik_norm"); any other by `extractor` on its "output". The gold is "answer".
SubjectOutcome score_records(const std::vector<TumluRecord>& records, const TumluLanguage& language,
                             const std::string& file_stem, const AnswerExtractor& extractor);

}  // namespace concord::eval
