// TUMLU prompts and option shuffling: exact strings, seeded permutations, letter balance.
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <set>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/eval/tumlu_prompt.h"
#include "eval_test_util.h"
#include "test_support.h"

namespace ce = concord::eval;
using concord::testing::TempDir;

TEST(TumluShuffle, EngineAndDrawsArePlatformIndependent) {
  // The C++ standard fixes the 10000th output of a default-seeded mt19937_64 ([rand.predef]).
  std::mt19937_64 engine;
  engine.discard(9999);
  EXPECT_EQ(engine(), 9981545732273789042ull);

  // Permutations from an independent Python implementation of mt19937_64, the FNV-1a/splitmix
  // seeding, rejection draws and Fisher-Yates (scripts/fixtures/make_eval_fixtures.py).
  const auto golden = nlohmann::json::parse(
      concord::read_file(concord::testing::fixture("eval/permutations.json")));
  ASSERT_GE(golden.size(), 6u);
  for (const auto& g : golden) {
    ce::TumluItem item;
    item.choices.resize(g["n"].get<size_t>(), "x");
    auto shown = ce::present_item(item, true, g["seed"].get<uint64_t>(), g["key"].get<std::string>());
    EXPECT_EQ(shown.order, g["order"].get<std::vector<int>>()) << g["key"];
  }
}

TEST(TumluShuffle, UniformBelowIsUnbiased) {
  std::mt19937_64 rng(42);
  std::array<int, 3> counts{};
  const int draws = 30000;
  for (int i = 0; i < draws; ++i) ++counts[ce::uniform_below(rng, 3)];
  for (int c : counts) EXPECT_NEAR(c, draws / 3, 300);
  // n = 1 always gives 0; a huge n stays in range.
  EXPECT_EQ(ce::uniform_below(rng, 1), 0u);
  const uint64_t big = (uint64_t{1} << 63) + 12345;
  for (int i = 0; i < 100; ++i) EXPECT_LT(ce::uniform_below(rng, big), big);
}

TEST(TumluShuffle, GoldLetterFollowsItsOption) {
  for (int n = 2; n <= 4; ++n) {
    for (int gold = 0; gold < n; ++gold) {
      ce::TumluItem item;
      for (int k = 0; k < n; ++k) item.choices.push_back("option-" + std::to_string(k));
      item.answer = gold;
      std::set<std::vector<int>> seen;
      for (uint64_t seed = 0; seed < 200; ++seed) {
        auto shown = ce::present_item(item, true, seed, "key");
        ASSERT_EQ(shown.choices.size(), static_cast<size_t>(n));
        EXPECT_EQ(shown.choices[shown.answer], "option-" + std::to_string(gold));
        auto sorted = shown.order;
        std::sort(sorted.begin(), sorted.end());
        for (int k = 0; k < n; ++k) EXPECT_EQ(sorted[k], k);
        seen.insert(shown.order);
      }
      EXPECT_EQ(seen.size(), n == 2 ? 2u : n == 3 ? 6u : 24u) << "every permutation occurs";
      auto kept = ce::present_item(item, false, 5, "key");
      EXPECT_EQ(kept.answer, gold);
      EXPECT_EQ(kept.choices, item.choices);
    }
  }
}

namespace {

// Pearson's chi-square of the gold-letter counts of 4-option items against uniform.
double chi_square(const std::array<int64_t, 4>& counts) {
  int64_t total = 0;
  for (auto c : counts) total += c;
  const double expected = static_cast<double>(total) / 4.0;
  double chi = 0;
  for (auto c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

}  // namespace

TEST(TumluShuffle, ShuffledLettersAreNearUniformWhileStoredOnesAreNot) {
  CONCORD_REQUIRE_TUMLU();
  const auto data = ce::load_tumlu(concord::testing::tumlu_dir());
  std::array<int64_t, 4> stored{}, shuffled{};
  for (const auto& set : data.languages) {
    for (const auto& subject : set.subjects) {
      for (size_t i = 0; i < subject.test.size(); ++i) {
        const auto& item = subject.test[i];
        if (item.choices.size() != 4) continue;
        ++stored[item.answer];
        auto shown = ce::present_item(item, true, 1234,
                                      ce::item_key(*set.language, "test", subject.file_stem, i));
        ++shuffled[shown.answer];
      }
    }
  }
  // 3 degrees of freedom: 16.27 is the 0.1% critical value.
  EXPECT_GT(chi_square(stored), 100.0) << stored[0] << " " << stored[1] << " " << stored[2] << " " << stored[3];
  EXPECT_LT(chi_square(shuffled), 16.27) << shuffled[0] << " " << shuffled[1] << " " << shuffled[2] << " " << shuffled[3];
  int64_t total = 0;
  for (auto c : shuffled) total += c;
  for (auto c : shuffled) EXPECT_NEAR(static_cast<double>(c) / total, 0.25, 0.02);
}

TEST(TumluPrompt, FewShotPromptIsTheBenchmarksFormatExactly) {
  TempDir tmp;
  ce::test::write_synthetic_subject(tmp.path(), "azerbaijani", "Biology", 3);
  const auto set = ce::load_tumlu_language(tmp.path(), "azerbaijani");
  const auto& lang = *set.language;
  ce::PromptOptions options;
  options.shuffle = false;
  const std::string shots = ce::build_shots(lang, set.subjects[0], options);
  std::string expected_shots;
  for (int i = 0; i < 5; ++i) {
    const std::string n = std::to_string(100 + i);
    std::vector<std::string> c;
    for (int k = 0, w = 0; k < 4; ++k) c.push_back(k == i % 4 ? "right-" + n : "wrong-" + n + "-" + std::to_string(w++));
    expected_shots += "Sual: Q" + n + " Biology\nA) " + c[0] + "\nB) " + c[1] + "\nC) " + c[2] +
                      "\nD) " + c[3] + "\n\nCavab: " + std::string(1, static_cast<char>('A' + i % 4)) +
                      "\n\n";
  }
  EXPECT_EQ(shots, expected_shots);
  const auto prompt = ce::build_prompt(lang, set.subjects[0], 1, options, shots);
  EXPECT_EQ(prompt.input,
            "Sual: Q1 Biology\nA) wrong-1-0\nB) wrong-1-1\nC) wrong-1-2\nD) right-1\n\nCavab: ");
  EXPECT_EQ(prompt.full(), shots + prompt.input);
  EXPECT_EQ(ce::stop_strings(lang), std::vector<std::string>{"\nSual:"});
}

TEST(TumluPrompt, NativeKeywordsOfEveryScript) {
  ce::TumluItem item;
  item.choices = {"x", "y"};
  EXPECT_EQ(ce::format_fewshot_example(ce::tumlu_language("kazakh"), "Сұрақ?", item.choices, 1),
            "Сұрақ: Сұрақ?\nA) x\nB) y\n\nЖауап: B\n\n");
  EXPECT_EQ(ce::format_fewshot_test(ce::tumlu_language("tatar"), "q", item.choices),
            "Сорау: q\nA) x\nB) y\n\nҖавап: ");
  EXPECT_EQ(ce::format_fewshot_test(ce::tumlu_language("uyghur"), "q", item.choices),
            "سوئال: q\nA) x\nB) y\n\nجاۋاب: ");
  EXPECT_EQ(ce::format_fewshot_test(ce::tumlu_language("crimean-tatar-cyrillic"), "q", item.choices),
            "Суаль: q\nA) x\nB) y\n\nДжевап: ");
  EXPECT_EQ(ce::format_fewshot_test(ce::tumlu_language("karakalpak"), "q", item.choices),
            "Soraw: q\nA) x\nB) y\n\nJuwap: ");
  EXPECT_EQ(ce::stop_strings(ce::tumlu_language("uzbek-cyrillic")), std::vector<std::string>{"\nСавол:"});
}

TEST(TumluPrompt, RealAzerbaijaniBiologyPrompt) {
  CONCORD_REQUIRE_TUMLU();
  const auto set = ce::load_tumlu_language(concord::testing::tumlu_dir(), "azerbaijani");
  ce::PromptOptions options;
  options.shuffle = false;
  const auto& bio = set.subject("Biology");
  const auto prompt = ce::build_prompt(*set.language, bio, 0, options, ce::build_shots(*set.language, bio, options));
  const std::string full = prompt.full();
  EXPECT_EQ(full.rfind("Sual: 1 saatda 1 bakteriyadan neçə nəsil törəyər?\nA) 3 nəsil\nB) 9 nəsil\n"
                       "C) 8 nəsil\nD) 1 nəsil\n\nCavab: A\n\nSual: ", 0),
            0u);
  const std::string tail =
      "Sual: Selülozanın inşaat funksiyasına nə aiddir?\nA) İnşaat funksiyası yoxdur\nB) Qan "
      "damarlarının divarı\nC) Plazmatik membran\nD) Bitki hüceyrələrinin qılafı\n\nCavab: ";
  ASSERT_GE(full.size(), tail.size());
  EXPECT_EQ(full.substr(full.size() - tail.size()), tail);
  size_t shots = 0;
  for (size_t pos = 0; (pos = full.find("\n\nCavab: ", pos)) != std::string::npos; ++pos) ++shots;
  EXPECT_EQ(shots, 6u);  // 5 exemplars and the test item
  EXPECT_EQ(prompt.item.answer, 3);
}

TEST(TumluPrompt, TransliteratedCopiesSeeTheSameOptionOrder) {
  CONCORD_REQUIRE_TUMLU();
  const auto root = concord::testing::tumlu_dir();
  const auto kaz = ce::load_tumlu_language(root, "kazakh");
  const auto lat = ce::load_tumlu_language(root, "kazakh-latin");
  ce::PromptOptions options;
  const auto& a = kaz.subject("biology");
  const auto& b = lat.subject("biology");
  for (size_t i = 0; i < a.test.size(); ++i) {
    auto pa = ce::build_prompt(*kaz.language, a, i, options, "");
    auto pb = ce::build_prompt(*lat.language, b, i, options, "");
    EXPECT_EQ(pa.item.order, pb.item.order) << i;
    EXPECT_EQ(pa.item.answer, pb.item.answer) << i;
  }
}

TEST(TumluPrompt, CotExemplarsUseWorkedSolutionsInStoredOrder) {
  TempDir tmp;
  ce::test::write_synthetic_subject(tmp.path(), "azerbaijani", "Physics", 2, 4, /*with_cot=*/true);
  const auto set = ce::load_tumlu_language(tmp.path(), "azerbaijani");
  ce::PromptOptions options;
  options.style = ce::PromptStyle::cot;
  options.shuffle = true;  // shuffles the test item, never an exemplar that names its letter
  const std::string shots = ce::build_shots(*set.language, set.subjects[0], options);
  EXPECT_EQ(shots.rfind("Sual: Q100 Physics\nA) right-100\nB) wrong-100-0\nC) wrong-100-1\n"
                        "D) wrong-100-2\nHəll: Solution 100. Düzgün cavab A\n\nSual: Q101",
                        0),
            0u)
      << shots;
  const auto prompt = ce::build_prompt(*set.language, set.subjects[0], 0, options, shots);
  EXPECT_EQ(prompt.input.rfind("Sual: Q0 Physics\n", 0), 0u);
  EXPECT_EQ(prompt.input.substr(prompt.input.size() - 8), "\nHəll: ");

  // No worked solutions: the CoT prompt refuses, naming the dev file.
  ce::test::write_synthetic_subject(tmp.path(), "turkish", "Physics", 2);
  const auto tur = ce::load_tumlu_language(tmp.path(), "turkish");
  try {
    ce::build_shots(*tur.language, tur.subjects[0], options);
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("dev/Physics.jsonl"), std::string::npos) << e.what();
  }
  EXPECT_EQ(ce::tumlu_language("kazakh").solution_keyword, "Шешім");
  EXPECT_EQ(ce::tumlu_language("turkish").solution_keyword, "Çözüm");
  EXPECT_EQ(ce::tumlu_language("uzbek").solution_keyword, "Yechim");
}

TEST(TumluPrompt, PythonStripUsesPythonWhitespace) {
  EXPECT_EQ(ce::python_strip("  \t\xC2\xA0x y\u3000\n"), "x y");  // NBSP and ideographic space
  EXPECT_EQ(ce::python_strip("\x1f" "a" "\x1c"), "a");             // str.isspace() holds for these
  EXPECT_EQ(ce::python_strip("\u200bа\u200b"), "\u200bа\u200b");   // zero-width space does not
  EXPECT_EQ(ce::python_strip(""), "");
  EXPECT_EQ(ce::python_strip(" \n "), "");
}
