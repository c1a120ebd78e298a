#include "concord/eval/tumlu_outputs.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::eval {

namespace {

[[noreturn]] void bad(const std::string& where, const std::string& key, const std::string& what) {
  throw FormatError(where + "." + key + ": " + what);
}

std::string get_string(const json& j, const std::string& where, const char* key, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) bad(where, key, "missing");
    return "";
  }
  if (!it->is_string()) bad(where, key, "must be a string");
  return it->get<std::string>();
}

std::vector<double> get_numbers(const json& j, const std::string& where, const char* key) {
  std::vector<double> out;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return out;
  if (!it->is_array()) bad(where, key, "must be an array of numbers");
  for (const auto& v : *it) {
    if (!v.is_number()) bad(where, key, "must be an array of numbers");
    out.push_back(v.get<double>());
  }
  return out;
}

nlohmann::ordered_json ordered(const TumluRecord& r) {
  nlohmann::ordered_json j;
  j["description"] = r.system;
  j["question"] = r.question;
  j["choices"] = r.choices;
  j["output"] = r.output;
  j["answer"] = r.answer;
  j["system"] = r.system;
  j["input"] = r.input;
  j["prediction"] = r.prediction ? nlohmann::ordered_json(*r.prediction)
                                 : nlohmann::ordered_json(nullptr);
  j["index"] = r.index;
  j["subject"] = r.subject;
  j["order"] = r.order;
  if (!r.loglik.empty()) {
    j["loglik"] = r.loglik;
    j["loglik_norm"] = r.loglik_norm;
  }
  return j;
}

}  // namespace

json TumluRecord::to_json() const {
  return json::parse(ordered(*this).dump(-1, ' ', false, json::error_handler_t::replace));
}

TumluRecord TumluRecord::from_json(const json& j, const std::string& where) {
  if (!j.is_object()) throw FormatError(where + ": not an object");
  TumluRecord r;
  r.question = get_string(j, where, "question", false);
  r.output = get_string(j, where, "output", true);
  r.answer = get_string(j, where, "answer", true);
  r.system = get_string(j, where, "system", false);
  if (r.system.empty()) r.system = get_string(j, where, "description", false);
  r.input = get_string(j, where, "input", false);
  r.subject = get_string(j, where, "subject", false);
  auto c = j.find("choices");
  if (c == j.end() || !c->is_array()) bad(where, "choices", "must be an array of strings");
  for (const auto& v : *c) {
    if (!v.is_string()) bad(where, "choices", "must be an array of strings");
    r.choices.push_back(v.get<std::string>());
  }
  if (r.choices.size() > 26) bad(where, "choices", "more than 26 options");
  if (auto p = j.find("prediction"); p != j.end() && !p->is_null()) {
    if (!p->is_string()) bad(where, "prediction", "must be a string or null");
    r.prediction = p->get<std::string>();
  }
  if (auto i = j.find("index"); i != j.end() && !i->is_null()) {
    if (!i->is_number_integer()) bad(where, "index", "must be an integer");
    r.index = i->get<int64_t>();
  }
  if (auto o = j.find("order"); o != j.end() && !o->is_null()) {
    if (!o->is_array()) bad(where, "order", "must be an array of integers");
    for (const auto& v : *o) {
      if (!v.is_number_integer()) bad(where, "order", "must be an array of integers");
      r.order.push_back(v.get<int>());
    }
  }
  r.loglik = get_numbers(j, where, "loglik");
  r.loglik_norm = get_numbers(j, where, "loglik_norm");
  if (!r.loglik.empty() && r.loglik.size() != r.choices.size()) {
    bad(where, "loglik", "needs one score per choice");
  }
  if (!r.loglik_norm.empty() && r.loglik_norm.size() != r.choices.size()) {
    bad(where, "loglik_norm", "needs one score per choice");
  }
  return r;
}

std::vector<TumluRecord> read_tumlu_outputs(const fs::path& file) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) fail_io(file.string(), "cannot read (", ec.message(), ")");
  if (size > (uintmax_t{256} << 20)) {
    fail_format(file.string(), "larger than 256 MiB (", size, " bytes); not a TUMLU outputs file?");
  }
  const std::string text = read_file(file);
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    fail_format(file.string(), "byte ", e.byte, ": invalid JSON");
  }
  if (!doc.is_array()) fail_format(file.string(), "expected a JSON array of records");
  std::vector<TumluRecord> records;
  records.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    records.push_back(TumluRecord::from_json(doc[i], file.string() + ": [" + std::to_string(i) + "]"));
  }
  return records;
}

void write_tumlu_outputs(const fs::path& file, const std::vector<TumluRecord>& records) {
  nlohmann::ordered_json doc = nlohmann::ordered_json::array();
  for (const auto& r : records) doc.push_back(ordered(r));
  // Invalid UTF-8 in a model's output must not make the file unreadable: replace it.
  write_file_atomic(file, doc.dump(4, ' ', false, json::error_handler_t::replace) + "\n");
}

fs::path tumlu_output_path(const fs::path& root, const std::string& language,
                           const std::string& protocol, const std::string& model,
                           const std::string& file_stem) {
  const fs::path m(model);
  CONCORD_CHECK(!model.empty() && m.is_relative(), "TUMLU outputs: model name '", model,
                "' must be a relative path");
  for (const auto& part : m) {
    CONCORD_CHECK(part != "." && part != "..", "TUMLU outputs: model name '", model,
                  "' may not hold '.' or '..'");
  }
  CONCORD_CHECK(!protocol.empty() && protocol.find('/') == std::string::npos,
                "TUMLU outputs: bad protocol name '", protocol, "'");
  return root / language / "outputs" / protocol / m / (file_stem + ".json");
}

namespace {

void collect_language(const fs::path& lang_dir, const std::string& language,
                      std::vector<TumluOutputFile>& out) {
  const fs::path outputs = lang_dir / "outputs";
  if (!fs::is_directory(outputs)) return;
  for (const auto& proto : fs::directory_iterator(outputs)) {
    if (!proto.is_directory()) continue;
    const std::string protocol = proto.path().filename().string();
    if (protocol.empty() || protocol[0] == '.') continue;
    for (auto it = fs::recursive_directory_iterator(proto.path());
         it != fs::recursive_directory_iterator(); ++it) {
      const auto name = it->path().filename().string();
      if (it->is_directory() && !name.empty() && name[0] == '.') {
        it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file() || it->path().extension() != ".json") continue;
      const fs::path model = fs::relative(it->path().parent_path(), proto.path());
      if (model.empty() || model == ".") continue;  // files directly under the protocol folder
      out.push_back({language, protocol, model.generic_string(), it->path().stem().string(),
                     it->path()});
    }
  }
}

}  // namespace

std::vector<TumluOutputFile> find_tumlu_outputs(const fs::path& dir) {
  CONCORD_CHECK(fs::is_directory(dir), dir.string(), ": not a folder");
  fs::path root = dir.lexically_normal();
  if (root.filename().empty()) root = root.parent_path();  // "data/azerbaijani/"
  std::vector<TumluOutputFile> out;
  if (const auto* lang = find_tumlu_language(root.filename().string());
      lang && fs::is_directory(root / "outputs")) {
    collect_language(root, lang->folder, out);
  } else {
    for (const auto& entry : fs::directory_iterator(root)) {
      if (!entry.is_directory()) continue;
      const auto* lang = find_tumlu_language(entry.path().filename().string());
      if (lang) collect_language(entry.path(), lang->folder, out);
    }
  }
  std::sort(out.begin(), out.end(), [](const TumluOutputFile& a, const TumluOutputFile& b) {
    return std::tie(a.protocol, a.model, a.language, a.file_stem) <
           std::tie(b.protocol, b.model, b.language, b.file_stem);
  });
  return out;
}

namespace {

int argmax(const std::vector<double>& v) {
  int best = 0;
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] > v[best]) best = static_cast<int>(i);
  }
  return best;
}

}  // namespace

SubjectOutcome score_records(const std::vector<TumluRecord>& records, const TumluLanguage& language,
                             const std::string& file_stem, const AnswerExtractor& extractor) {
  SubjectOutcome outcome;
  outcome.language = language.folder;
  outcome.file_stem = file_stem;
  outcome.subject = canonical_subject(file_stem);
  bool any_norm = false;
  for (const auto& r : records) any_norm = any_norm || !r.loglik_norm.empty();
  for (const auto& r : records) {
    std::optional<char> predicted;
    if (!r.loglik.empty()) {
      predicted = static_cast<char>('A' + argmax(r.loglik));
    } else {
      predicted = extractor.extract(r.output, language, r.choices);
    }
    outcome.extracted += predicted.has_value();
    const bool ok = predicted && r.answer.size() == 1 && r.answer[0] == *predicted;
    outcome.correct.push_back(ok);
    if (any_norm) {
      const auto& scores = r.loglik_norm.empty() ? r.loglik : r.loglik_norm;
      const bool ok_norm = !scores.empty() && r.answer.size() == 1 &&
                           r.answer[0] == static_cast<char>('A' + argmax(scores));
      outcome.correct_norm.push_back(ok_norm);
    }
  }
  return outcome;
}

}  // namespace concord::eval
