// TUMLU-mini in its published layout: "TUMLU: A Unified and Native Language Understanding
// Benchmark for Turkic Languages" (Isbarov et al., arXiv 2502.11020), data as in the
// benchmark's repository (github.com/ceferisbarov/TUMLU, data/<language>/{dev,test}/*.jsonl).
//
//   <root>/<language folder>/{dev,test}/<Subject file>.jsonl
//   {"question": str, "choices": [2..4 str], "answer": "A".."D", "subject": str, "CoT": str?}
//
// The language, its ISO 639-3 code and its script come from the folder name; the 8 native folders
// plus 4 transliterated copies (crimean-tatar-cyrillic, kazakh-latin, uyghur-latin,
// uzbek-cyrillic). Subject file names differ per language ("maths", "Mathematics", "math",
// kazakh "phsyics", ...) and are mapped onto one list of canonical subjects; the paper's headline
// averages leave out logic, world history, philosophy, religion & ethics, human & society and
// computer science (see docs/tumlu.md).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace concord::eval {

enum class Script { latin, cyrillic, arabic };
const char* to_string(Script script);  ///< "Latin", "Cyrillic", "Arabic"

/// One folder of the benchmark and the native keywords its prompts use (the benchmark's
/// QUESTION_DICT / ANSWER_DICT / SOLUTION_DICT, scripts/utils.py).
struct TumluLanguage {
  std::string folder;               ///< "azerbaijani", "kazakh-latin", ...
  std::string code;                 ///< ISO 639-3: "aze"; shared by a transliterated copy
  Script script;
  bool native;                      ///< false for the transliterated copies
  std::string question_keyword;     ///< "Sual"
  std::string answer_keyword;       ///< "Cavab"
  std::string answer_keyword_lower; ///< Python's str.lower() of it: "cavab"
  std::string solution_keyword;     ///< title-cased CoT keyword ("Həll"); "" where none published
  /// "aze", or "kaz-Latn" for a transliterated copy: the column name in tables.
  std::string label() const;
};

/// The 12 folders: the 8 native languages in the paper's order (aze crh kaa kaz tat tur uig uzb),
/// then the 4 transliterated copies.
const std::vector<TumluLanguage>& tumlu_languages();
/// nullptr when `folder` is not a TUMLU folder.
const TumluLanguage* find_tumlu_language(std::string_view folder);
/// Throws concord::Error listing the valid folder names.
const TumluLanguage& tumlu_language(std::string_view folder);

/// Canonical subjects. The first seven make up the headline subset.
enum class TumluSubject {
  biology,
  chemistry,
  geography,
  history,
  language_literature,
  mathematics,
  physics,
  logic,
  world_history,
  philosophy,
  religion_ethics,
  human_society,
  computer_science,
};
inline constexpr int kNumTumluSubjects = 13;

const char* subject_name(TumluSubject subject);  ///< "Biology", "Language & Literature", ...
/// True for the subjects the paper's headline averages keep.
bool is_headline(TumluSubject subject);
/// Maps a subject file stem or "subject" string of any folder ("phsyics", "maths",
/// "history-of-Kazakhstan", "Turkish_Language_and_Literature", "Human & Society", ...) onto its
/// canonical subject; nullopt when the name is not one the benchmark uses.
std::optional<TumluSubject> canonical_subject(std::string_view name);

/// "A" for 0, "B" for 1, ...
std::string answer_letter(int index);

struct TumluItem {
  std::string question;
  std::vector<std::string> choices;  ///< 2 to 4
  int answer = 0;                    ///< index into choices
  std::string cot;                   ///< worked solution; "" when the item has none
  int64_t line = 0;                  ///< 1-based line in its file
};

/// One subject of one folder: its dev shots and its test items.
struct TumluSubjectSet {
  std::string file_stem;  ///< the published file name without ".jsonl" ("phsyics")
  TumluSubject subject;
  std::filesystem::path dev_path, test_path;
  std::vector<TumluItem> dev, test;

  /// True when every dev item carries a worked solution (the CoT prompt needs them all).
  bool has_cot() const;
};

struct TumluLanguageSet {
  const TumluLanguage* language = nullptr;
  std::vector<TumluSubjectSet> subjects;  ///< sorted by file stem
  int64_t test_count() const;
  int64_t dev_count() const;
  const TumluSubjectSet& subject(std::string_view file_stem) const;
};

struct TumluData {
  std::filesystem::path root;
  std::vector<TumluLanguageSet> languages;  ///< in tumlu_languages() order
  int64_t test_count() const;
  int64_t dev_count() const;
  /// Throws concord::Error when the folder was not loaded.
  const TumluLanguageSet& language(std::string_view folder) const;
};

/// Reads one TUMLU JSONL file. A line that is not an object with a non-empty string "question",
/// 2-4 string "choices" and an "answer" letter that indexes them throws concord::FormatError
/// "FILE:LINE: ...". An empty file gives no items (tatar's computer-science test file is empty).
std::vector<TumluItem> read_tumlu_jsonl(const std::filesystem::path& file);

/// Loads one folder: every test/*.jsonl with its dev/ namesake. A subject file name that maps
/// to no canonical subject, or a test file without a dev file, is a FormatError naming the file.
TumluLanguageSet load_tumlu_language(const std::filesystem::path& root, std::string_view folder);

/// Loads `folders` (empty: every TUMLU folder present under `root`, at least one).
TumluData load_tumlu(const std::filesystem::path& root, const std::vector<std::string>& folders = {});

}  // namespace concord::eval
