// The evaluation driver end to end with a fake model: exact accuracies, outputs layout,
// sharding and merging, resuming, the CoT and log-likelihood protocols.
#include <gtest/gtest.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/eval/tumlu_eval.h"
#include "concord/eval/tumlu_report.h"
#include "eval_test_util.h"
#include "test_support.h"

namespace ce = concord::eval;
namespace fs = std::filesystem;
using concord::testing::TempDir;

namespace {

// Two languages: azerbaijani Biology (5 items), Physics (4 items, 3 options), Logic (3 items,
// left out of the headline average); kazakh biology (7 items).
fs::path make_data(const TempDir& tmp, bool with_cot = false) {
  const fs::path root = tmp / "data";
  ce::test::write_synthetic_subject(root, "azerbaijani", "Biology", 5, 4, with_cot);
  ce::test::write_synthetic_subject(root, "azerbaijani", "Physics", 4, 3, with_cot);
  ce::test::write_synthetic_subject(root, "azerbaijani", "logic", 3, 4, with_cot);
  ce::test::write_synthetic_subject(root, "kazakh", "biology", 7, 4, false);
  return root;
}

double accuracy(const ce::TumluEvalResult& r, const std::string& lang, const std::string& stem) {
  for (const auto& o : r.outcomes) {
    if (o.language != lang || o.file_stem != stem) continue;
    int c = 0;
    for (auto x : o.correct) c += x;
    return 100.0 * c / static_cast<double>(o.correct.size());
  }
  ADD_FAILURE() << "no outcome for " << lang << "/" << stem;
  return -1;
}

}  // namespace

TEST(TumluEval, GenerativeProtocolEndToEndWithExactAccuracies) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp));
  ce::test::ParityModel azerbaijani_model("org/parity");
  ce::TumluEvalOptions options;
  options.languages = {"azerbaijani"};
  options.batch_size = 2;
  const auto result = ce::run_tumlu_eval(azerbaijani_model, data, tmp / "out", options);
  EXPECT_EQ(result.subjects_run, 3);
  EXPECT_TRUE(result.complete());
  // Even indices right: 3 of 5, 2 of 4, 2 of 3.
  EXPECT_DOUBLE_EQ(accuracy(result, "azerbaijani", "Biology"), 60.0);
  EXPECT_DOUBLE_EQ(accuracy(result, "azerbaijani", "Physics"), 50.0);
  EXPECT_NEAR(accuracy(result, "azerbaijani", "logic"), 200.0 / 3, 1e-9);
  EXPECT_EQ(azerbaijani_model.generate_calls, 3 + 2 + 2);  // batches of 2
  EXPECT_EQ(azerbaijani_model.last_stop_strings, std::vector<std::string>{"\nSual:"});
  EXPECT_EQ(azerbaijani_model.last_max_new_tokens, 32);

  // The benchmark's layout and fields; the stored output is stripped as the scripts do.
  const auto file = tmp / "out/azerbaijani/outputs/generative/org/parity/Biology.json";
  ASSERT_TRUE(fs::exists(file));
  const auto records = ce::read_tumlu_outputs(file);
  ASSERT_EQ(records.size(), 5u);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    EXPECT_EQ(r.index, static_cast<int64_t>(i));
    EXPECT_EQ(r.question, "Q" + std::to_string(i) + " Biology");
    EXPECT_EQ(r.choices[r.answer[0] - 'A'], "right-" + std::to_string(i));  // gold follows option
    EXPECT_NE(r.output.find(std::to_string(i)), std::string::npos);  // "B) right-3"
    EXPECT_NE(r.output.back(), '\n');                                  // stored stripped
    EXPECT_EQ(r.input.substr(r.input.size() - 9), "\n\nCavab: ");
    EXPECT_EQ(r.system.rfind("Sual: Q100 Biology\n", 0), 0u);
    ASSERT_TRUE(r.prediction.has_value());
    EXPECT_EQ(*r.prediction == r.answer, i % 2 == 0);
  }

  // Report over the outcomes: headline mean of Biology and Physics = 55.
  ce::ReportOptions ro;
  ro.bootstrap_resamples = 0;
  const auto scores = ce::score_model("generative", "org/parity", result.outcomes, ro);
  EXPECT_DOUBLE_EQ(scores.language("azerbaijani")->macro, 55.0);
  EXPECT_DOUBLE_EQ(scores.language("azerbaijani")->micro, 500.0 / 9);
  // And the same numbers recomputed from the folder, as `concord tumlu-score` does.
  const auto rescored = ce::score_outputs_folder(tmp / "out", "official", ro);
  ASSERT_EQ(rescored.size(), 1u);
  EXPECT_EQ(rescored[0].model, "org/parity");
  EXPECT_DOUBLE_EQ(rescored[0].language("azerbaijani")->macro, 55.0);
}

TEST(TumluEval, ShardedRanksMergeIntoTheSingleProcessFiles) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp));
  ce::TumluEvalOptions options;
  {
    ce::test::ParityModel model("m");
    ce::run_tumlu_eval(model, data, tmp / "single", options);
  }
  options.world_size = 3;
  for (int rank : {2, 0}) {
    options.rank = rank;
    ce::test::ParityModel model("m");
    const auto r = ce::run_tumlu_eval(model, data, tmp / "sharded", options);
    EXPECT_FALSE(r.complete());  // rank 1 has not run yet
    EXPECT_TRUE(r.outcomes.empty());
  }
  options.rank = 1;
  ce::test::ParityModel model("m");
  const auto last = ce::run_tumlu_eval(model, data, tmp / "sharded", options);
  EXPECT_TRUE(last.complete());
  EXPECT_EQ(last.outcomes.size(), 4u);
  for (const char* rel : {"azerbaijani/outputs/generative/m/Biology.json",
                          "azerbaijani/outputs/generative/m/Physics.json",
                          "azerbaijani/outputs/generative/m/logic.json",
                          "kazakh/outputs/generative/m/biology.json"}) {
    ASSERT_TRUE(fs::exists(tmp / "sharded" / rel)) << rel;
    EXPECT_EQ(concord::read_file(tmp / "sharded" / rel), concord::read_file(tmp / "single" / rel)) << rel;
  }
  // Shard parts live in a hidden folder that scoring passes over.
  EXPECT_TRUE(fs::exists(tmp / "sharded/kazakh/outputs/generative/m/.shards/biology.rank1-of-3.json"));
  ce::ReportOptions ro;
  ro.bootstrap_resamples = 0;
  const auto rescored = ce::score_outputs_folder(tmp / "sharded", "official", ro);
  ASSERT_EQ(rescored.size(), 1u);
  EXPECT_EQ(rescored[0].language("kazakh")->subjects.size(), 1u);
  EXPECT_NEAR(rescored[0].language("kazakh")->macro, 400.0 / 7, 1e-9);
}

TEST(TumluEval, ResumeSkipsSubjectsWhoseFileExists) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp));
  ce::TumluEvalOptions options;
  options.languages = {"kazakh"};
  ce::test::ParityModel model("m");
  const auto first = ce::run_tumlu_eval(model, data, tmp / "out", options);
  EXPECT_EQ(first.subjects_run, 1);
  EXPECT_EQ(model.last_stop_strings, std::vector<std::string>{"\nСұрақ:"});
  ce::test::RefusingModel again("m");
  const auto second = ce::run_tumlu_eval(again, data, tmp / "out", options);
  EXPECT_EQ(second.subjects_run, 0);
  EXPECT_EQ(second.subjects_resumed, 1);
  ASSERT_EQ(second.outcomes.size(), 1u);
  EXPECT_NEAR(accuracy(second, "kazakh", "biology"), 400.0 / 7, 1e-9);
}

TEST(TumluEval, LoglikProtocolScoresEachOptionAfterASharedPrefix) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp));
  ce::test::ParityModel model("m");
  ce::TumluEvalOptions options;
  options.protocol = "loglik";
  options.languages = {"azerbaijani"};
  const auto result = ce::run_tumlu_eval(model, data, tmp / "out", options);
  EXPECT_EQ(model.loglik_calls, 5 + 4 + 3);
  EXPECT_EQ(model.last_prefix.substr(model.last_prefix.size() - 8), "\n\nCavab:");  // no trailing space
  EXPECT_DOUBLE_EQ(accuracy(result, "azerbaijani", "Biology"), 60.0);
  EXPECT_DOUBLE_EQ(accuracy(result, "azerbaijani", "Physics"), 50.0);
  const auto records = ce::read_tumlu_outputs(tmp / "out/azerbaijani/outputs/loglik/m/Physics.json");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].loglik.size(), 3u);  // one score per option
  EXPECT_EQ(records[0].loglik_norm[0], records[0].loglik[0] / 2.0);  // " A": 2 characters
  for (const auto& o : result.outcomes) EXPECT_EQ(o.correct_norm, o.correct);
}

TEST(TumluEval, CotProtocolRunsOnlyWhereWorkedSolutionsExist) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp, /*with_cot=*/true));
  ce::test::ParityModel model("m");
  ce::TumluEvalOptions options;
  options.protocol = "generative_cot";
  const auto result = ce::run_tumlu_eval(model, data, tmp / "out", options);
  EXPECT_EQ(result.subjects_run, 3);              // the azerbaijani subjects
  EXPECT_EQ(result.subjects_not_applicable, 1);   // kazakh biology has no CoT in this data
  EXPECT_EQ(model.last_max_new_tokens, 512);
  const auto records =
      ce::read_tumlu_outputs(tmp / "out/azerbaijani/outputs/generative_cot/m/Biology.json");
  EXPECT_NE(records[0].system.find("\nHəll: Solution 100. Düzgün cavab A\n\n"), std::string::npos);
  EXPECT_EQ(records[0].input.substr(records[0].input.size() - 8), "\nHəll: ");
  EXPECT_DOUBLE_EQ(accuracy(result, "azerbaijani", "Biology"), 60.0);
}

TEST(TumluEval, BadOptionsAreErrors) {
  TempDir tmp;
  const auto data = ce::load_tumlu(make_data(tmp));
  ce::test::ParityModel model("m");
  ce::TumluEvalOptions options;
  options.protocol = "zero-shot";
  try {
    ce::run_tumlu_eval(model, data, tmp / "out", options);
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid: generative, generative_cot, loglik"), std::string::npos)
        << e.what();
  }
  options.protocol = "generative";
  options.rank = 2;
  options.world_size = 2;
  EXPECT_THROW(ce::run_tumlu_eval(model, data, tmp / "out", options), concord::Error);
  options.rank = 0;
  options.world_size = 1;
  options.languages = {"klingon"};
  EXPECT_THROW(ce::run_tumlu_eval(model, data, tmp / "out", options), concord::Error);
}

TEST(TumluEval, EveryRealPromptCarriesItsGoldOption) {
  // The whole TUMLU-mini test set through the prompt builder: the gold letter of every item,
  // in every folder, names the stored gold option's text in the prompt's last block.
  CONCORD_REQUIRE_TUMLU();
  const auto data = ce::load_tumlu(concord::testing::tumlu_dir());
  ce::PromptOptions options;
  int64_t checked = 0;
  for (const auto& set : data.languages) {
    for (const auto& subject : set.subjects) {
      const std::string shots = ce::build_shots(*set.language, subject, options);
      for (size_t i = 0; i < subject.test.size(); ++i) {
        const auto p = ce::build_prompt(*set.language, subject, i, options, shots);
        const auto& item = subject.test[i];
        const std::string line = "\n" + ce::answer_letter(p.item.answer) + ") " + item.choices[item.answer];
        EXPECT_NE(p.input.find(line), std::string::npos) << set.language->folder << "/" << subject.file_stem << " " << i;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 7486);
}
