// TUMLU-mini loader: the published layout, exact counts, subject normalisation, bad files.
#include <gtest/gtest.h>

#include <map>

#include "concord/core/error.h"
#include "concord/eval/tumlu_data.h"
#include "eval_test_util.h"
#include "test_support.h"

namespace ce = concord::eval;
using concord::testing::TempDir;
using concord::testing::write_file;

TEST(TumluData, ExactTestCountsOfTheNativeFolders) {
  CONCORD_REQUIRE_TUMLU();
  const auto data = ce::load_tumlu(concord::testing::tumlu_dir());
  const std::map<std::string, int64_t> expected = {
      {"aze", 700}, {"crh", 345}, {"kaa", 215}, {"kaz", 899},
      {"tat", 795}, {"tur", 900}, {"uig", 494}, {"uzb", 700}};
  int64_t native = 0;
  for (const auto& set : data.languages) {
    if (!set.language->native) continue;
    EXPECT_EQ(set.test_count(), expected.at(set.language->code)) << set.language->folder;
    native += set.test_count();
  }
  EXPECT_EQ(native, 5048);
  ASSERT_EQ(data.languages.size(), 12u);
  EXPECT_EQ(data.test_count(), 7486);
  EXPECT_EQ(data.dev_count(), 429);
}

TEST(TumluData, LanguageAndScriptComeFromTheFolderName) {
  EXPECT_EQ(ce::tumlu_language("kazakh").script, ce::Script::cyrillic);
  EXPECT_TRUE(ce::tumlu_language("kazakh").native);
  EXPECT_EQ(ce::tumlu_language("kazakh-latin").script, ce::Script::latin);
  EXPECT_FALSE(ce::tumlu_language("kazakh-latin").native);
  EXPECT_EQ(ce::tumlu_language("kazakh-latin").code, "kaz");
  EXPECT_EQ(ce::tumlu_language("kazakh-latin").label(), "kaz-Latn");
  EXPECT_EQ(ce::tumlu_language("uyghur").script, ce::Script::arabic);
  EXPECT_EQ(ce::tumlu_language("uzbek-cyrillic").label(), "uzb-Cyrl");
  EXPECT_EQ(ce::tumlu_language("crimean-tatar-cyrillic").answer_keyword, "Джевап");
  int native = 0;
  for (const auto& l : ce::tumlu_languages()) native += l.native;
  EXPECT_EQ(native, 8);
  try {
    ce::tumlu_language("kyrgyz");
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("valid: azerbaijani, crimean-tatar"), std::string::npos)
        << e.what();
  }
}

TEST(TumluData, SubjectNamesOfEveryFolderMapToCanonicalSubjects) {
  using S = ce::TumluSubject;
  const std::map<std::string, S> cases = {
      {"Biology", S::biology},
      {"phsyics", S::physics},
      {"maths", S::mathematics},
      {"math", S::mathematics},
      {"Mathematics", S::mathematics},
      {"history-of-Kazakhstan", S::history},
      {"History of Russia", S::history},
      {"kazakh", S::language_literature},
      {"language and literature", S::language_literature},
      {"Language & Literature", S::language_literature},
      {"Turkish_Language_and_Literature", S::language_literature},
      {"uyghur_literature&grammar", S::language_literature},
      {"world-history", S::world_history},
      {"Religion_and_Ethics", S::religion_ethics},
      {"Human & Society", S::human_society},
      {"Computer science", S::computer_science},
      {"logic", S::logic},
      {"Philosophy", S::philosophy},
  };
  for (const auto& [name, subject] : cases) {
    auto got = ce::canonical_subject(name);
    ASSERT_TRUE(got.has_value()) << name;
    EXPECT_EQ(*got, subject) << name;
  }
  EXPECT_FALSE(ce::canonical_subject("astrology").has_value());
  EXPECT_FALSE(ce::canonical_subject("").has_value());
  // The headline subset leaves out exactly these six.
  for (S s : {S::logic, S::world_history, S::philosophy, S::religion_ethics, S::human_society,
              S::computer_science}) {
    EXPECT_FALSE(ce::is_headline(s)) << ce::subject_name(s);
  }
  for (S s : {S::biology, S::chemistry, S::geography, S::history, S::language_literature,
              S::mathematics, S::physics}) {
    EXPECT_TRUE(ce::is_headline(s)) << ce::subject_name(s);
  }
}

TEST(TumluData, HeadlineSubsetCountsAndQuirks) {
  CONCORD_REQUIRE_TUMLU();
  const auto data = ce::load_tumlu(concord::testing::tumlu_dir());
  const std::map<std::string, std::pair<int, int64_t>> expected = {
      {"azerbaijani", {7, 700}}, {"crimean-tatar", {7, 345}}, {"karakalpak", {5, 215}},
      {"kazakh", {7, 700}},      {"tatar", {7, 695}},         {"turkish", {7, 700}},
      {"uyghur", {5, 494}},      {"uzbek", {7, 700}},         {"kazakh-latin", {7, 700}}};
  for (const auto& set : data.languages) {
    int subjects = 0;
    int64_t items = 0;
    for (const auto& s : set.subjects) {
      if (!ce::is_headline(s.subject)) continue;
      ++subjects;
      items += static_cast<int64_t>(s.test.size());
    }
    auto it = expected.find(set.language->folder);
    if (it == expected.end()) continue;
    EXPECT_EQ(subjects, it->second.first) << set.language->folder;
    EXPECT_EQ(items, it->second.second) << set.language->folder;
  }
  // kazakh's misspelt physics file is physics; tatar's computer-science test file is empty.
  EXPECT_EQ(data.language("kazakh").subject("phsyics").subject, ce::TumluSubject::physics);
  EXPECT_EQ(data.language("kazakh").subject("phsyics").test.size(), 100u);
  EXPECT_TRUE(data.language("tatar").subject("Computer science").test.empty());
  // crimean-tatar has 2- and 3-choice items.
  std::map<size_t, int> by_choices;
  for (const auto& s : data.language("crimean-tatar").subjects) {
    for (const auto& item : s.test) ++by_choices[item.choices.size()];
  }
  EXPECT_EQ(by_choices[4], 253);
  EXPECT_EQ(by_choices[3], 85);
  EXPECT_EQ(by_choices[2], 7);
  // Worked solutions: every dev item of azerbaijani, kazakh, turkish and uzbek.
  for (const char* lang : {"azerbaijani", "kazakh", "kazakh-latin", "turkish", "uzbek"}) {
    for (const auto& s : data.language(lang).subjects) EXPECT_TRUE(s.has_cot()) << lang << "/" << s.file_stem;
  }
  for (const auto& s : data.language("tatar").subjects) EXPECT_FALSE(s.has_cot());
}

TEST(TumluData, FirstItemIsReadAsStored) {
  CONCORD_REQUIRE_TUMLU();
  const auto set = ce::load_tumlu_language(concord::testing::tumlu_dir(), "azerbaijani");
  const auto& bio = set.subject("Biology");
  ASSERT_EQ(bio.test.size(), 100u);
  EXPECT_EQ(bio.test[0].question, "Selülozanın inşaat funksiyasına nə aiddir?");
  EXPECT_EQ(bio.test[0].choices.size(), 4u);
  EXPECT_EQ(bio.test[0].choices[3], "Bitki hüceyrələrinin qılafı");
  EXPECT_EQ(bio.test[0].answer, 3);
  EXPECT_EQ(bio.dev[0].choices[0], "3 nəsil");
  EXPECT_FALSE(bio.dev[0].cot.empty());
}

TEST(TumluData, BadLinesNameTheFileAndLine) {
  TempDir tmp;
  const std::string good =
      R"({"question": "q", "choices": ["a", "b", "c"], "answer": "B", "subject": "x"})" "\n";
  struct Case {
    std::string line, expect;
  };
  const std::vector<Case> cases = {
      {R"({"question": "q", "choices": ["a", "b"], "answer": "C"})", "only 2 choices"},
      {R"({"question": "q", "choices": ["a"], "answer": "A"})", "2 to 4 options, got 1"},
      {R"({"question": "q", "choices": ["a","b","c","d","e"], "answer": "A"})", "got 5"},
      {R"({"question": 3, "choices": ["a", "b"], "answer": "A"})", "\"question\" must be a string"},
      {R"({"question": "q", "choices": ["a", 2], "answer": "A"})", "\"choices\"[1] is not a string"},
      {R"({"question": "q", "choices": ["a", "b"], "answer": "b"})", "must be a letter A-D"},
      {R"({"question": "q", "choices": ["a", "b"]})", "\"answer\" must be a letter"},
      {R"({"question": "q", "choices": ["a", "b"], "answer": "A", "CoT": 5})", "\"CoT\" must be a string"},
      {R"({"question": "q", "choices": ["a", "b"], "answer": "A")", "bad.jsonl:2"},
      {R"(["not", "an", "object"])", "bad.jsonl:2"},
  };
  for (const auto& c : cases) {
    const auto path = write_file(tmp / "bad.jsonl", good + c.line + "\n" + good);
    try {
      ce::read_tumlu_jsonl(path);
      ADD_FAILURE() << "no error for " << c.line;
    } catch (const concord::FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("bad.jsonl:2: "), std::string::npos) << what;
      EXPECT_NE(what.find(c.expect), std::string::npos) << what;
      EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    }
  }
  // An empty file is a subject without items, not an error.
  EXPECT_TRUE(ce::read_tumlu_jsonl(write_file(tmp / "empty.jsonl", "")).empty());
}

TEST(TumluData, LayoutErrorsNameTheFile) {
  TempDir tmp;
  const std::string line =
      R"({"question": "q", "choices": ["a", "b"], "answer": "A", "subject": "Biology"})" "\n";
  write_file(tmp / "turkish" / "test" / "Astrology.jsonl", line);
  write_file(tmp / "turkish" / "dev" / "Astrology.jsonl", line);
  try {
    ce::load_tumlu_language(tmp.path(), "turkish");
    FAIL() << "expected an error";
  } catch (const concord::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("Astrology.jsonl: subject 'Astrology'"), std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(tmp / "turkish");
  write_file(tmp / "turkish" / "test" / "Biology.jsonl", line);
  try {
    ce::load_tumlu_language(tmp.path(), "turkish");
    FAIL() << "expected an error";
  } catch (const concord::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("no dev file"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ce::load_tumlu(tmp.path(), {"klingon"}), concord::Error);
}
