#include "concord/eval/tumlu_data.h"

#include <algorithm>
#include <map>
#include <system_error>

#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/data/jsonl.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::eval {

const char* to_string(Script script) {
  switch (script) {
    case Script::latin: return "Latin";
    case Script::cyrillic: return "Cyrillic";
    case Script::arabic: return "Arabic";
  }
  return "?";
}

std::string TumluLanguage::label() const {
  if (native) return code;
  return code + (script == Script::latin ? "-Latn" : script == Script::cyrillic ? "-Cyrl" : "-Arab");
}

const std::vector<TumluLanguage>& tumlu_languages() {
  // Keywords as the benchmark's scripts/utils.py writes them; the lower-case answer keyword is
  // what Python's str.lower() gives (the official extractor searches for both forms). The
  // solution keyword is SOLUTION_DICT's entry passed through str.title(), as format_CoT_prompt
  // does. uyghur-latin has no entry in the published dictionaries; its keywords come from the
  // data's README (So'al / Jawab).
  static const std::vector<TumluLanguage> languages = {
      {"azerbaijani", "aze", Script::latin, true, "Sual", "Cavab", "cavab", "Həll"},
      {"crimean-tatar", "crh", Script::latin, true, "Sual", "Cevap", "cevap", "Irinti"},
      {"karakalpak", "kaa", Script::latin, true, "Soraw", "Juwap", "juwap", ""},
      {"kazakh", "kaz", Script::cyrillic, true, "Сұрақ", "Жауап", "жауап", "Шешім"},
      {"tatar", "tat", Script::cyrillic, true, "Сорау", "Җавап", "җавап", "Чишелеш"},
      {"turkish", "tur", Script::latin, true, "Soru", "Cevap", "cevap", "Çözüm"},
      {"uyghur", "uig", Script::arabic, true, "سوئال", "جاۋاب", "جاۋاب", "ھهل"},
      {"uzbek", "uzb", Script::latin, true, "Savol", "Javob", "javob", "Yechim"},
      {"crimean-tatar-cyrillic", "crh", Script::cyrillic, false, "Суаль", "Джевап", "джевап", ""},
      {"kazakh-latin", "kaz", Script::latin, false, "Suraq", "Jawap", "jawap", "Şeşim"},
      {"uyghur-latin", "uig", Script::latin, false, "So'al", "Jawab", "jawab", ""},
      {"uzbek-cyrillic", "uzb", Script::cyrillic, false, "Савол", "Жавоб", "жавоб", "Ечим"},
  };
  return languages;
}

const TumluLanguage* find_tumlu_language(std::string_view folder) {
  for (const auto& l : tumlu_languages()) {
    if (l.folder == folder) return &l;
  }
  return nullptr;
}

const TumluLanguage& tumlu_language(std::string_view folder) {
  if (const auto* l = find_tumlu_language(folder)) return *l;
  std::string valid;
  for (const auto& l : tumlu_languages()) valid += (valid.empty() ? "" : ", ") + l.folder;
  fail("unknown TUMLU language folder '", folder, "' (valid: ", valid, ")");
}

const char* subject_name(TumluSubject subject) {
  switch (subject) {
    case TumluSubject::biology: return "Biology";
    case TumluSubject::chemistry: return "Chemistry";
    case TumluSubject::geography: return "Geography";
    case TumluSubject::history: return "History";
    case TumluSubject::language_literature: return "Language & Literature";
    case TumluSubject::mathematics: return "Mathematics";
    case TumluSubject::physics: return "Physics";
    case TumluSubject::logic: return "Logic";
    case TumluSubject::world_history: return "World History";
    case TumluSubject::philosophy: return "Philosophy";
    case TumluSubject::religion_ethics: return "Religion & Ethics";
    case TumluSubject::human_society: return "Human & Society";
    case TumluSubject::computer_science: return "Computer Science";
  }
  return "?";
}

bool is_headline(TumluSubject subject) {
  return static_cast<int>(subject) <= static_cast<int>(TumluSubject::physics);
}

std::optional<TumluSubject> canonical_subject(std::string_view name) {
  // Fold the spellings the folders use ("Human & Society", "Religion_and_Ethics",
  // "history-of-Kazakhstan", "uyghur_literature&grammar") into lower-case words.
  std::string key;
  auto space = [&] {
    if (!key.empty() && key.back() != ' ') key.push_back(' ');
  };
  for (char c : name) {
    if (c >= 'A' && c <= 'Z') {
      key.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (c == '_' || c == '-' || c == ' ' || c == '\t') {
      space();
    } else if (c == '&') {
      space();
      key += "and ";
    } else {
      key.push_back(c);
    }
  }
  while (!key.empty() && key.back() == ' ') key.pop_back();

  using S = TumluSubject;
  static const std::map<std::string, S> table = {
      {"biology", S::biology},
      {"chemistry", S::chemistry},
      {"geography", S::geography},
      {"history", S::history},
      {"history of kazakhstan", S::history},
      {"history of russia", S::history},
      {"language", S::language_literature},
      {"language and literature", S::language_literature},
      {"kazakh", S::language_literature},  // kazakh/kazakh.jsonl: the native-language subject
      {"turkish language and literature", S::language_literature},
      {"uyghur literature and grammar", S::language_literature},
      {"mathematics", S::mathematics},
      {"maths", S::mathematics},
      {"math", S::mathematics},
      {"physics", S::physics},
      {"phsyics", S::physics},  // kazakh/{dev,test}/phsyics.jsonl, as published
      {"logic", S::logic},
      {"world history", S::world_history},
      {"philosophy", S::philosophy},
      {"religion and ethics", S::religion_ethics},
      {"human and society", S::human_society},
      {"computer science", S::computer_science},
  };
  auto it = table.find(key);
  if (it == table.end()) return std::nullopt;
  return it->second;
}

std::string answer_letter(int index) { return std::string(1, static_cast<char>('A' + index)); }

bool TumluSubjectSet::has_cot() const {
  if (dev.empty()) return false;
  return std::all_of(dev.begin(), dev.end(), [](const TumluItem& i) { return !i.cot.empty(); });
}

int64_t TumluLanguageSet::test_count() const {
  int64_t n = 0;
  for (const auto& s : subjects) n += static_cast<int64_t>(s.test.size());
  return n;
}

int64_t TumluLanguageSet::dev_count() const {
  int64_t n = 0;
  for (const auto& s : subjects) n += static_cast<int64_t>(s.dev.size());
  return n;
}

const TumluSubjectSet& TumluLanguageSet::subject(std::string_view file_stem) const {
  for (const auto& s : subjects) {
    if (s.file_stem == file_stem) return s;
  }
  fail("TUMLU ", language ? language->folder : "?", ": no subject file '", file_stem, "'");
}

int64_t TumluData::test_count() const {
  int64_t n = 0;
  for (const auto& l : languages) n += l.test_count();
  return n;
}

int64_t TumluData::dev_count() const {
  int64_t n = 0;
  for (const auto& l : languages) n += l.dev_count();
  return n;
}

const TumluLanguageSet& TumluData::language(std::string_view folder) const {
  for (const auto& l : languages) {
    if (l.language->folder == folder) return l;
  }
  fail("TUMLU language '", folder, "' was not loaded from ", root.string());
}

std::vector<TumluItem> read_tumlu_jsonl(const fs::path& file) {
  std::vector<TumluItem> items;
  data::JsonlOptions options;
  options.max_line_bytes = size_t{4} << 20;  // the longest published item is ~20 KB
  data::JsonlReader reader(file, options);
  reader.for_each([&](const json& obj, const data::RecordLocation& loc) {
    TumluItem item;
    item.line = loc.line;
    auto q = obj.find("question");
    if (q == obj.end() || !q->is_string()) loc.fail("\"question\" must be a string");
    item.question = q->get<std::string>();
    if (item.question.empty()) loc.fail("\"question\" is empty");

    auto c = obj.find("choices");
    if (c == obj.end() || !c->is_array()) loc.fail("\"choices\" must be an array of strings");
    if (c->size() < 2 || c->size() > 4) {
      loc.fail("\"choices\" must hold 2 to 4 options, got " + std::to_string(c->size()));
    }
    for (size_t i = 0; i < c->size(); ++i) {
      if (!(*c)[i].is_string()) loc.fail("\"choices\"[" + std::to_string(i) + "] is not a string");
      item.choices.push_back((*c)[i].get<std::string>());
    }

    auto a = obj.find("answer");
    if (a == obj.end() || !a->is_string()) loc.fail("\"answer\" must be a letter A-D");
    const std::string letter = a->get<std::string>();
    if (letter.size() != 1 || letter[0] < 'A' || letter[0] > 'D') {
      loc.fail("\"answer\" must be a letter A-D, got \"" + letter.substr(0, 16) + "\"");
    }
    item.answer = letter[0] - 'A';
    if (item.answer >= static_cast<int>(item.choices.size())) {
      loc.fail("\"answer\" " + letter + " but only " + std::to_string(item.choices.size()) +
               " choices");
    }

    auto s = obj.find("subject");
    if (s != obj.end() && !s->is_string() && !s->is_null()) loc.fail("\"subject\" must be a string");
    auto cot = obj.find("CoT");
    if (cot != obj.end() && !cot->is_null()) {
      if (!cot->is_string()) loc.fail("\"CoT\" must be a string");
      item.cot = cot->get<std::string>();
    }
    items.push_back(std::move(item));
  });
  return items;
}

TumluLanguageSet load_tumlu_language(const fs::path& root, std::string_view folder) {
  TumluLanguageSet set;
  set.language = &tumlu_language(folder);
  const fs::path dir = root / std::string(folder);
  const fs::path test_dir = dir / "test";
  CONCORD_CHECK(fs::is_directory(test_dir), "TUMLU: ", test_dir.string(), " is not a folder");

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(test_dir)) {
    if (entry.is_regular_file() && entry.path().extension() == ".jsonl") files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  CONCORD_CHECK(!files.empty(), "TUMLU: no .jsonl files in ", test_dir.string());

  for (const auto& test_path : files) {
    TumluSubjectSet subject;
    subject.file_stem = test_path.stem().string();
    auto canonical = canonical_subject(subject.file_stem);
    if (!canonical) {
      fail_format(test_path.string(), "subject '", subject.file_stem,
                  "' is not one of the benchmark's subjects");
    }
    subject.subject = *canonical;
    subject.test_path = test_path;
    subject.dev_path = dir / "dev" / test_path.filename();
    if (!fs::is_regular_file(subject.dev_path)) {
      fail_format(test_path.string(), "no dev file ", subject.dev_path.string(),
                  " (the few-shot prompt needs one)");
    }
    subject.test = read_tumlu_jsonl(test_path);
    subject.dev = read_tumlu_jsonl(subject.dev_path);
    set.subjects.push_back(std::move(subject));
  }
  return set;
}

TumluData load_tumlu(const fs::path& root, const std::vector<std::string>& folders) {
  TumluData data;
  data.root = root;
  CONCORD_CHECK(fs::is_directory(root), "TUMLU: ", root.string(), " is not a folder");
  for (const auto& f : folders) tumlu_language(f);  // an unknown name lists the valid ones
  for (const auto& lang : tumlu_languages()) {
    const bool wanted = folders.empty()
                            ? fs::is_directory(root / lang.folder / "test")
                            : std::find(folders.begin(), folders.end(), lang.folder) != folders.end();
    if (wanted) data.languages.push_back(load_tumlu_language(root, lang.folder));
  }
  CONCORD_CHECK(!data.languages.empty(), "TUMLU: no language folders under ", root.string());
  return data;
}

}  // namespace concord::eval
