// Outputs files in the benchmark's layout, scoring and reports.
#include <gtest/gtest.h>

#include <cmath>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/eval/tumlu_outputs.h"
#include "concord/eval/tumlu_report.h"
#include "test_support.h"

namespace ce = concord::eval;
namespace fs = std::filesystem;
using concord::testing::TempDir;
using concord::testing::write_file;

namespace {

ce::SubjectOutcome outcome(const std::string& lang, const std::string& stem, int correct, int n) {
  ce::SubjectOutcome o;
  o.language = lang;
  o.file_stem = stem;
  o.subject = ce::canonical_subject(stem);
  for (int i = 0; i < n; ++i) o.correct.push_back(i < correct);
  o.extracted = n;
  return o;
}

}  // namespace

TEST(TumluOutputs, RoundTripInTheBenchmarksFieldNames) {
  TempDir tmp;
  ce::TumluRecord r;
  r.question = "Sual?";
  r.choices = {"bir", "iki", "üç"};
  r.output = "B) iki";
  r.answer = "B";
  r.system = "Sual: ...\n\nCavab: A\n\n";
  r.input = "Sual: Sual?\nA) bir\nB) iki\nC) üç\n\nCavab: ";
  r.prediction = "B";
  r.index = 7;
  r.subject = "Biology";
  r.order = {2, 0, 1};
  const auto path = ce::tumlu_output_path(tmp.path(), "azerbaijani", "generative", "org/tiny", "Biology");
  EXPECT_EQ(path, tmp.path() / "azerbaijani/outputs/generative/org/tiny/Biology.json");
  ce::write_tumlu_outputs(path, {r});
  const std::string text = concord::read_file(path);
  // The benchmark's json.dump(indent=4, ensure_ascii=False): field order and raw UTF-8.
  EXPECT_EQ(text.rfind("[\n    {\n        \"description\": ", 0), 0u) << text;
  EXPECT_LT(text.find("\"question\""), text.find("\"choices\""));
  EXPECT_LT(text.find("\"output\""), text.find("\"answer\""));
  EXPECT_NE(text.find("üç"), std::string::npos);
  const auto back = ce::read_tumlu_outputs(path);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].choices, r.choices);
  EXPECT_EQ(back[0].output, r.output);
  EXPECT_EQ(back[0].answer, "B");
  EXPECT_EQ(back[0].system, r.system);
  EXPECT_EQ(back[0].input, r.input);
  EXPECT_EQ(*back[0].prediction, "B");
  EXPECT_EQ(back[0].index, 7);
  EXPECT_EQ(back[0].order, r.order);
  EXPECT_THROW(ce::tumlu_output_path(tmp.path(), "azerbaijani", "generative", "../evil", "B"),
               concord::Error);
}

TEST(TumluOutputs, MalformedFilesNameTheFileAndElement) {
  TempDir tmp;
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases = {
      {"[{\"output\": \"A\", \"answer\": \"A\", \"choices\": [\"x\"]}, {\"answer\": \"B\", \"choices\": []}]",
       "bad.json: [1].output: missing"},
      {"[{\"output\": 3, \"answer\": \"A\", \"choices\": []}]", "[0].output: must be a string"},
      {"[{\"output\": \"x\", \"answer\": \"A\"}]", "[0].choices: must be an array"},
      {"[{\"output\": \"x\", \"answer\": \"A\", \"choices\": [\"a\"], \"loglik\": [1, 2]}]",
       "[0].loglik: needs one score per choice"},
      {"{\"output\": \"x\"}", "expected a JSON array"},
      {"[{\"output\": \"x\",", "invalid JSON"},
      {"[1]", "[0]: not an object"},
  };
  for (const auto& c : cases) {
    const auto path = write_file(tmp / "bad.json", c.text);
    try {
      ce::read_tumlu_outputs(path);
      ADD_FAILURE() << "no error for " << c.text;
    } catch (const concord::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
    }
  }
}

TEST(TumluReport, MacroMicroHeadlineScriptsAndNativeMean) {
  std::vector<ce::SubjectOutcome> outcomes = {
      outcome("azerbaijani", "Biology", 3, 4),       // 75
      outcome("azerbaijani", "Physics", 1, 2),       // 50
      outcome("kazakh", "biology", 1, 3),            // 33.33
      outcome("kazakh", "logic", 10, 10),            // not a headline subject
      outcome("tatar", "Computer science", 0, 0),    // empty file: no accuracy
      outcome("tatar", "Maths", 9, 10),              // 90
      outcome("kazakh-latin", "biology", 2, 3),      // 66.67, transliterated copy
  };
  ce::ReportOptions options;
  options.bootstrap_resamples = 200;
  const auto m = ce::score_model("generative", "tiny", outcomes, options);
  const auto* aze = m.language("azerbaijani");
  ASSERT_NE(aze, nullptr);
  EXPECT_DOUBLE_EQ(aze->macro, 62.5);
  EXPECT_DOUBLE_EQ(aze->micro, 100.0 * 4 / 6);
  EXPECT_EQ(aze->subjects_used, 2);
  const auto* kaz = m.language("kazakh");
  EXPECT_NEAR(kaz->macro, 100.0 / 3, 1e-9);  // logic left out of the headline average
  EXPECT_EQ(kaz->subjects_used, 1);
  EXPECT_DOUBLE_EQ(m.language("tatar")->macro, 90.0);
  // Native mean over aze, kaz, tat; the transliterated copy does not count.
  ASSERT_TRUE(m.native_mean.has_value());
  EXPECT_EQ(m.native_languages, 3);
  EXPECT_NEAR(*m.native_mean, (62.5 + 100.0 / 3 + 90.0) / 3, 1e-9);
  EXPECT_NEAR(m.scripts.at("Latin"), (62.5 + 200.0 / 3) / 2, 1e-9);
  EXPECT_NEAR(m.scripts.at("Cyrillic"), (100.0 / 3 + 90.0) / 2, 1e-9);
  // Intervals: contain the point estimate; a perfect subject's is [100, 100].
  EXPECT_LE(aze->macro_ci.low, aze->macro);
  EXPECT_GE(aze->macro_ci.high, aze->macro);
  EXPECT_LT(aze->macro_ci.low, aze->macro_ci.high);
  for (const auto& s : kaz->subjects) {
    if (s.file_stem == "logic") {
      EXPECT_DOUBLE_EQ(s.ci.low, 100.0);
      EXPECT_DOUBLE_EQ(s.ci.high, 100.0);
      EXPECT_FALSE(s.headline);
    }
  }
  // Seeded: the same intervals again.
  const auto again = ce::score_model("generative", "tiny", outcomes, options);
  EXPECT_EQ(again.native_ci.low, m.native_ci.low);
  EXPECT_EQ(again.native_ci.high, m.native_ci.high);

  // All subjects on request.
  options.headline_only = false;
  const auto all = ce::score_model("generative", "tiny", outcomes, options);
  EXPECT_NEAR(all.language("kazakh")->macro, (100.0 / 3 + 100.0) / 2, 1e-9);
  EXPECT_NEAR(all.language("kazakh")->micro, 100.0 * 11 / 13, 1e-9);
}

TEST(TumluReport, BootstrapIntervalMatchesTheBinomialSpread) {
  // One subject of 400 items at 50%: the 95% interval is about +-1.96 * sqrt(.25/400) = +-4.9.
  ce::ReportOptions options;
  options.bootstrap_resamples = 1000;
  const auto m = ce::score_model("p", "m", {outcome("turkish", "Biology", 200, 400)}, options);
  const auto* tur = m.language("turkish");
  EXPECT_NEAR(tur->macro_ci.low, 45.1, 1.0);
  EXPECT_NEAR(tur->macro_ci.high, 54.9, 1.0);
  EXPECT_DOUBLE_EQ(ce::percentile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(ce::percentile({1, 2, 3, 4}, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(ce::percentile({10}, 0.975), 10.0);
}

TEST(TumluReport, TablesShapedLikeThePapers) {
  ce::ReportOptions options;
  options.bootstrap_resamples = 0;
  std::vector<ce::ModelScores> models = {
      ce::score_model("generative", "model-a",
                      {outcome("azerbaijani", "Biology", 3, 4), outcome("uyghur", "biology", 1, 4),
                       outcome("uyghur-latin", "biology", 2, 4)},
                      options),
      ce::score_model("generative", "model-b", {outcome("azerbaijani", "Biology", 1, 2)}, options),
  };
  EXPECT_EQ(ce::markdown_language_table(models),
            "| Model | Mean | aze | uig | uig-Latn |\n"
            "|---|---:|---:|---:|---:|\n"
            "| model-a (generative) | 50.00 | 75.00 | 25.00 | 50.00 |\n"
            "| model-b (generative) | 50.00 | 50.00 | - | - |\n");
  EXPECT_EQ(ce::markdown_script_table(models),
            "| Model | Latin | Cyrillic | Arabic |\n"
            "|---|---:|---:|---:|\n"
            "| model-a (generative) | 62.50 | - | 25.00 |\n"
            "| model-b (generative) | 50.00 | - | - |\n");
}

TEST(TumluReport, ScoresAPublishedLayoutFolderForEveryModel) {
  const auto root = concord::testing::fixture("eval/outputs");
  const auto expected = nlohmann::json::parse(
      concord::read_file(concord::testing::fixture("eval/expected_scores.json")));
  ce::ReportOptions options;
  options.bootstrap_resamples = 100;
  const auto models = ce::score_outputs_folder(root, "official", options);
  ASSERT_EQ(models.size(), 2u);
  for (const auto& m : models) {
    EXPECT_EQ(m.protocol, "no_cot_instruct");
    ASSERT_TRUE(expected.contains(m.model)) << m.model;
    for (const auto& [lang, subjects] : expected[m.model].items()) {
      const auto* ls = m.language(lang);
      ASSERT_NE(ls, nullptr) << m.model << " " << lang;
      for (const auto& [stem, acc] : subjects.items()) {
        bool found = false;
        for (const auto& s : ls->subjects) {
          if (s.file_stem != stem) continue;
          found = true;
          EXPECT_NEAR(s.accuracy, acc.get<double>(), 1e-9) << m.model << " " << lang << " " << stem;
        }
        EXPECT_TRUE(found) << stem;
      }
    }
  }
  // "org/model-a" is a nested folder, found as one model; kazakh logic is left out of the
  // headline mean: (62.5 + 33.33) / 2.
  const auto& a = models[1].model == "org/model-a" ? models[1] : models[0];
  EXPECT_EQ(a.model, "org/model-a");
  EXPECT_NEAR(*a.native_mean, (62.5 + 100.0 / 3) / 2, 1e-9);

  // The robust extractor also reads the bare "D" in kazakh biology.
  const auto robust = ce::score_outputs_folder(root, "robust", options);
  const auto& ra = robust[1].model == "org/model-a" ? robust[1] : robust[0];
  EXPECT_NEAR(ra.language("kazakh")->macro, 200.0 / 3, 1e-9);

  EXPECT_THROW(ce::score_outputs_folder(root, "nope", options), concord::Error);
}

TEST(TumluReport, WritesResultsJsonReportAndChart) {
  TempDir tmp;
  ce::ReportOptions options;
  options.bootstrap_resamples = 50;
  const auto models = ce::score_outputs_folder(concord::testing::fixture("eval/outputs"), "official", options);
  ce::write_tumlu_report(tmp.path(), models, options, "official");
  const auto results = nlohmann::json::parse(concord::read_file(tmp / "results.json"));
  EXPECT_EQ(results["extractor"], "official");
  EXPECT_EQ(results["average"], "headline subjects");
  ASSERT_EQ(results["models"].size(), 2u);
  bool seen = false;
  for (const auto& m : results["models"]) {
    if (m["model"] != "org/model-a") continue;
    seen = true;
    EXPECT_DOUBLE_EQ(m["languages"]["azerbaijani"]["accuracy"].get<double>(), 62.5);
    EXPECT_EQ(m["languages"]["kazakh"]["subjects"]["logic"]["headline"], false);
    EXPECT_EQ(m["languages"]["kazakh"]["script"], "Cyrillic");
    EXPECT_EQ(m["languages"]["kazakh"]["accuracy_ci"].size(), 2u);
  }
  EXPECT_TRUE(seen);
  const std::string report = concord::read_file(tmp / "report.md");
  EXPECT_NE(report.find("| Model | Mean | aze | kaz |"), std::string::npos) << report;
  EXPECT_NE(report.find("charts/tumlu_no_cot_instruct_org_model-a.png"), std::string::npos);
  EXPECT_TRUE(fs::exists(tmp / "charts" / "tumlu_no_cot_instruct_org_model-a.png"));
  EXPECT_GT(fs::file_size(tmp / "charts" / "tumlu_no_cot_instruct_org_model-a.png"), 1000u);
}
