#include "concord/eval/tumlu_report.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/plot.h"
#include "concord/core/report.h"
#include "concord/eval/answer_extraction.h"
#include "concord/eval/tumlu_prompt.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::eval {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

const LanguageScore* ModelScores::language(const std::string& folder) const {
  for (const auto& l : languages) {
    if (l.language->folder == folder) return &l;
  }
  return nullptr;
}

namespace {

double mean(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

Interval interval(std::vector<double> values, double confidence) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  const double tail = (1.0 - confidence) / 2.0;
  return {percentile(values, tail), percentile(values, 1.0 - tail)};
}

int64_t count(const std::vector<uint8_t>& v) {
  int64_t c = 0;
  for (uint8_t x : v) c += x != 0;
  return c;
}

// Which subjects of a language enter its average.
bool used(const SubjectScore& s, const ReportOptions& options) {
  if (s.n == 0) return false;  // an empty subject file (tatar computer science) has no accuracy
  return options.headline_only ? (s.known && s.headline) : true;
}

}  // namespace

ModelScores score_model(const std::string& protocol, const std::string& model,
                        const std::vector<SubjectOutcome>& outcomes, const ReportOptions& options) {
  ModelScores out;
  out.protocol = protocol;
  out.model = model;

  // Group by language in the canonical order, subjects by file stem.
  std::map<std::string, std::vector<const SubjectOutcome*>> by_language;
  for (const auto& o : outcomes) by_language[o.language].push_back(&o);
  std::vector<std::vector<const SubjectOutcome*>> groups;
  for (const auto& lang : tumlu_languages()) {
    auto it = by_language.find(lang.folder);
    if (it == by_language.end()) continue;
    auto subjects = it->second;
    std::sort(subjects.begin(), subjects.end(),
              [](const SubjectOutcome* a, const SubjectOutcome* b) { return a->file_stem < b->file_stem; });
    LanguageScore ls;
    ls.language = &lang;
    for (const auto* o : subjects) {
      SubjectScore s;
      s.file_stem = o->file_stem;
      s.known = o->subject.has_value();
      s.name = s.known ? subject_name(*o->subject) : o->file_stem;
      s.headline = s.known && is_headline(*o->subject);
      s.n = static_cast<int64_t>(o->correct.size());
      s.correct = count(o->correct);
      s.extracted = o->extracted;
      s.accuracy = s.n ? 100.0 * s.correct / s.n : 0.0;
      if (!o->correct_norm.empty()) s.accuracy_norm = 100.0 * count(o->correct_norm) / s.n;
      ls.subjects.push_back(s);
    }
    std::vector<double> accs, accs_norm;
    int64_t correct = 0;
    for (const auto& s : ls.subjects) {
      if (!used(s, options)) continue;
      ++ls.subjects_used;
      ls.n += s.n;
      correct += s.correct;
      accs.push_back(s.accuracy);
      if (s.accuracy_norm) accs_norm.push_back(*s.accuracy_norm);
    }
    ls.macro = mean(accs);
    ls.micro = ls.n ? 100.0 * correct / ls.n : 0.0;
    if (!accs_norm.empty() && accs_norm.size() == accs.size()) ls.macro_norm = mean(accs_norm);
    out.languages.push_back(std::move(ls));
    groups.push_back(std::move(subjects));
  }

  // Scripts and the native mean over languages that have at least one subject in the average.
  std::map<std::string, std::vector<double>> scripts;
  std::vector<double> native;
  for (const auto& ls : out.languages) {
    if (ls.subjects_used == 0) continue;
    scripts[to_string(ls.language->script)].push_back(ls.macro);
    if (ls.language->native) native.push_back(ls.macro);
  }
  for (const auto& [name, values] : scripts) out.scripts[name] = mean(values);
  out.native_languages = static_cast<int>(native.size());
  if (!native.empty()) out.native_mean = mean(native);

  // Joint percentile bootstrap.
  const int64_t B = options.bootstrap_resamples;
  if (B > 0) {
    std::mt19937_64 rng(options.seed ^ 0x7475'6d6c'7500ull);  // "tumlu"
    std::vector<std::vector<std::vector<double>>> subject_draws(out.languages.size());
    std::vector<std::vector<double>> macro_draws(out.languages.size()), micro_draws(out.languages.size());
    std::vector<double> native_draws;
    for (size_t l = 0; l < out.languages.size(); ++l) {
      subject_draws[l].resize(out.languages[l].subjects.size());
    }
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> native_b;
      for (size_t l = 0; l < out.languages.size(); ++l) {
        auto& ls = out.languages[l];
        std::vector<double> accs;
        int64_t correct = 0, n = 0;
        for (size_t s = 0; s < ls.subjects.size(); ++s) {
          const auto& items = groups[l][s]->correct;
          if (items.empty()) continue;
          int64_t c = 0;
          for (size_t i = 0; i < items.size(); ++i) c += items[uniform_below(rng, items.size())];
          const double acc = 100.0 * c / static_cast<double>(items.size());
          subject_draws[l][s].push_back(acc);
          if (!used(ls.subjects[s], options)) continue;
          accs.push_back(acc);
          correct += c;
          n += static_cast<int64_t>(items.size());
        }
        if (accs.empty()) continue;
        macro_draws[l].push_back(mean(accs));
        micro_draws[l].push_back(100.0 * correct / n);
        if (ls.language->native) native_b.push_back(mean(accs));
      }
      if (!native_b.empty()) native_draws.push_back(mean(native_b));
    }
    for (size_t l = 0; l < out.languages.size(); ++l) {
      auto& ls = out.languages[l];
      for (size_t s = 0; s < ls.subjects.size(); ++s) {
        ls.subjects[s].ci = interval(subject_draws[l][s], options.confidence);
      }
      ls.macro_ci = interval(macro_draws[l], options.confidence);
      ls.micro_ci = interval(micro_draws[l], options.confidence);
    }
    out.native_ci = interval(native_draws, options.confidence);
  }
  return out;
}

std::vector<ModelScores> score_outputs_folder(const fs::path& root, const std::string& extractor_name,
                                              const ReportOptions& options) {
  const auto extractor = make_answer_extractor(extractor_name);
  const auto files = find_tumlu_outputs(root);
  CONCORD_CHECK(!files.empty(), root.string(),
                ": no TUMLU outputs found (expected <language>/outputs/<protocol>/<model>/<Subject>.json)");
  std::map<std::pair<std::string, std::string>, std::vector<SubjectOutcome>> by_model;
  for (const auto& f : files) {
    const auto records = read_tumlu_outputs(f.path);
    by_model[{f.protocol, f.model}].push_back(
        score_records(records, tumlu_language(f.language), f.file_stem, *extractor));
  }
  std::vector<ModelScores> out;
  for (const auto& [key, outcomes] : by_model) {
    out.push_back(score_model(key.first, key.second, outcomes, options));
  }
  return out;
}

namespace {

json interval_json(const Interval& i) { return json::array({i.low, i.high}); }

// Columns of the language table: native languages first, then transliterated copies, in
// tumlu_languages() order, each present in at least one model.
std::vector<const TumluLanguage*> columns(const std::vector<ModelScores>& models) {
  std::vector<const TumluLanguage*> cols;
  for (bool native : {true, false}) {
    for (const auto& lang : tumlu_languages()) {
      if (lang.native != native) continue;
      for (const auto& m : models) {
        const auto* ls = m.language(lang.folder);
        if (ls && ls->subjects_used > 0) {
          cols.push_back(&lang);
          break;
        }
      }
    }
  }
  return cols;
}

std::string row_label(const ModelScores& m) { return m.model + " (" + m.protocol + ")"; }

std::string markdown(const std::vector<std::string>& header,
                     const std::vector<std::vector<std::string>>& rows) {
  std::string out = "|";
  for (const auto& h : header) out += " " + h + " |";
  out += "\n|";
  for (size_t i = 0; i < header.size(); ++i) out += i == 0 ? "---|" : "---:|";
  out += "\n";
  for (const auto& r : rows) {
    out += "|";
    for (const auto& c : r) out += " " + c + " |";
    out += "\n";
  }
  return out;
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.';
    out.push_back(ok ? c : '_');
  }
  return out;
}

}  // namespace

json results_json(const std::vector<ModelScores>& models, const ReportOptions& options,
                  const std::string& extractor) {
  json out;
  out["benchmark"] = "TUMLU-mini";
  out["extractor"] = extractor;
  out["average"] = options.headline_only ? "headline subjects" : "all subjects";
  out["bootstrap"] = {{"resamples", options.bootstrap_resamples},
                      {"seed", options.seed},
                      {"confidence", options.confidence}};
  out["models"] = json::array();
  for (const auto& m : models) {
    json jm;
    jm["model"] = m.model;
    jm["protocol"] = m.protocol;
    jm["native_mean"] = m.native_mean ? json(*m.native_mean) : json(nullptr);
    jm["native_mean_ci"] = interval_json(m.native_ci);
    jm["native_languages"] = m.native_languages;
    jm["scripts"] = m.scripts;
    jm["languages"] = json::object();
    for (const auto& ls : m.languages) {
      json jl;
      jl["code"] = ls.language->code;
      jl["label"] = ls.language->label();
      jl["script"] = to_string(ls.language->script);
      jl["native"] = ls.language->native;
      jl["accuracy"] = ls.macro;
      jl["accuracy_ci"] = interval_json(ls.macro_ci);
      jl["micro"] = ls.micro;
      jl["micro_ci"] = interval_json(ls.micro_ci);
      if (ls.macro_norm) jl["accuracy_norm"] = *ls.macro_norm;
      jl["n"] = ls.n;
      jl["subjects_used"] = ls.subjects_used;
      jl["subjects"] = json::object();
      for (const auto& s : ls.subjects) {
        json js = {{"subject", s.name},   {"headline", s.headline}, {"n", s.n},
                   {"correct", s.correct}, {"extracted", s.extracted},
                   {"accuracy", s.accuracy}, {"ci", interval_json(s.ci)}};
        if (s.accuracy_norm) js["accuracy_norm"] = *s.accuracy_norm;
        jl["subjects"][s.file_stem] = js;
      }
      jm["languages"][ls.language->folder] = jl;
    }
    out["models"].push_back(jm);
  }
  return out;
}

std::string markdown_language_table(const std::vector<ModelScores>& models) {
  const auto cols = columns(models);
  std::vector<std::string> header = {"Model", "Mean"};
  for (const auto* c : cols) header.push_back(c->label());
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : models) {
    std::vector<std::string> row = {row_label(m), m.native_mean ? fixed(*m.native_mean) : "-"};
    for (const auto* c : cols) {
      const auto* ls = m.language(c->folder);
      row.push_back(ls && ls->subjects_used ? fixed(ls->macro) : "-");
    }
    rows.push_back(std::move(row));
  }
  return markdown(header, rows);
}

std::string markdown_script_table(const std::vector<ModelScores>& models) {
  std::vector<std::string> header = {"Model"};
  for (Script s : {Script::latin, Script::cyrillic, Script::arabic}) header.push_back(to_string(s));
  std::vector<std::vector<std::string>> rows;
  for (const auto& m : models) {
    std::vector<std::string> row = {row_label(m)};
    for (Script s : {Script::latin, Script::cyrillic, Script::arabic}) {
      auto it = m.scripts.find(to_string(s));
      row.push_back(it == m.scripts.end() ? "-" : fixed(it->second));
    }
    rows.push_back(std::move(row));
  }
  return markdown(header, rows);
}

std::string markdown_subject_table(const ModelScores& m) {
  std::vector<std::string> header = {"Subject"};
  std::vector<const LanguageScore*> langs;
  for (const auto& ls : m.languages) {
    header.push_back(ls.language->label());
    langs.push_back(&ls);
  }
  // Rows: canonical subjects in order, then unknown names.
  std::vector<std::string> names;
  for (int i = 0; i < kNumTumluSubjects; ++i) names.push_back(subject_name(static_cast<TumluSubject>(i)));
  for (const auto& ls : m.languages) {
    for (const auto& s : ls.subjects) {
      if (!s.known && std::find(names.begin(), names.end(), s.name) == names.end()) names.push_back(s.name);
    }
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& name : names) {
    std::vector<std::string> row = {name};
    bool any = false;
    for (const auto* ls : langs) {
      std::string cell = "-";
      for (const auto& s : ls->subjects) {
        if (s.name != name) continue;
        cell = s.n ? fixed(s.accuracy) + " [" + fixed(s.ci.low, 1) + ", " + fixed(s.ci.high, 1) +
                         "] n=" + std::to_string(s.n)
                   : "n=0";
        any = true;
      }
      row.push_back(cell);
    }
    if (any) rows.push_back(std::move(row));
  }
  return markdown(header, rows);
}

void write_tumlu_report(const fs::path& dir, const std::vector<ModelScores>& models,
                        const ReportOptions& options, const std::string& extractor) {
  fs::create_directories(dir / "charts");
  write_file_atomic(dir / "results.json", results_json(models, options, extractor).dump(2) + "\n");

  Report report("TUMLU-mini");
  report.paragraph(std::string("Accuracy (%) per language: unweighted mean over ") +
                   (options.headline_only ? "the headline subjects" : "all subjects") +
                   "; answers read by the `" + extractor + "` extractor; " +
                   std::to_string(options.bootstrap_resamples) +
                   " bootstrap resamples for the intervals.");
  report.heading("Languages");
  report.raw(markdown_language_table(models) + "\n");
  report.heading("Scripts");
  report.raw(markdown_script_table(models) + "\n");
  for (const auto& m : models) {
    report.heading(row_label(m));
    report.raw(markdown_subject_table(m) + "\n");
    std::vector<std::string> labels;
    std::vector<double> values, errors;
    for (const auto& ls : m.languages) {
      if (ls.subjects_used == 0) continue;
      labels.push_back(ls.language->label());
      values.push_back(ls.macro);
      errors.push_back((ls.macro_ci.high - ls.macro_ci.low) / 2.0);
    }
    if (labels.empty()) continue;
    const std::string png = "charts/tumlu_" + sanitize(m.protocol) + "_" + sanitize(m.model) + ".png";
    ChartSpec spec;
    spec.title = "TUMLU-mini: " + m.model + " (" + m.protocol + ")";
    spec.x_label = "language";
    spec.y_label = "accuracy (%)";
    plot_bars(dir / png, spec, labels, values, errors);
    report.image("accuracy per language", png);
  }
  report.write(dir / "report.md");
}

}  // namespace concord::eval
