// Answer extraction: the benchmark's official pattern list (parity with a Python
// re-implementation on realistic outputs) and the robust extractor's readings and refusals in
// Latin, Cyrillic and Arabic script.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/eval/answer_extraction.h"
#include "test_support.h"

namespace ce = concord::eval;

namespace {

std::string show(std::optional<char> c) { return c ? std::string(1, *c) : "none"; }

const std::vector<std::string> kFour = {"x", "y", "z", "w"};

}  // namespace

TEST(AnswerExtraction, RegistryBuildsByNameAndListsValidNames) {
  EXPECT_EQ(ce::make_answer_extractor("official")->name(), "official");
  EXPECT_EQ(ce::make_answer_extractor("robust")->name(), "robust");
  try {
    ce::make_answer_extractor("regex");
    FAIL() << "expected an error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown answer extractor 'regex' (valid: official, robust)"),
              std::string::npos)
        << e.what();
  }
}

TEST(AnswerExtraction, OfficialMatchesThePublishedRulesInPython) {
  const auto cases = nlohmann::json::parse(
      concord::read_file(concord::testing::fixture("eval/official_cases.json")));
  ASSERT_GE(cases.size(), 30u);
  const auto official = ce::make_answer_extractor("official");
  for (const auto& c : cases) {
    const auto& lang = ce::tumlu_language(c["language"].get<std::string>());
    const std::string output = c["output"].get<std::string>();
    const std::string expected = c["official"].is_null() ? "none" : c["official"].get<std::string>();
    EXPECT_EQ(show(official->extract(output, lang, kFour)), expected)
        << c["language"] << ": " << output;
  }
}

TEST(AnswerExtraction, OfficialQuirksAreKept) {
  const auto official = ce::make_answer_extractor("official");
  const auto& aze = ce::tumlu_language("azerbaijani");
  // Pattern order first, letters second: a keyword statement beats an earlier "B)".
  EXPECT_EQ(show(official->extract("B) 7. Cavab: A", aze, kFour)), "A");
  // An echoed enumeration is read as its first letter.
  EXPECT_EQ(show(official->extract("A) 5 B) 7 C) 9", aze, kFour)), "A");
  // A bare letter is not read.
  EXPECT_EQ(show(official->extract("C", aze, kFour)), "none");
  // The keyword's own Cyrillic capital is mapped in the text but not in the pattern.
  const auto& crh_cyr = ce::tumlu_language("crimean-tatar-cyrillic");
  EXPECT_EQ(show(official->extract("Джевап: B", crh_cyr, kFour)), "none");
  EXPECT_EQ(show(official->extract("джевап: B", crh_cyr, kFour)), "B");
  // Letters beyond the item's options are still read (the published code does not check).
  EXPECT_EQ(show(official->extract("Cavab: D", aze, {"x", "y"})), "D");
  EXPECT_EQ(ce::official_normalize("Жауап:\n\n **В**"), "Жауап: B");
}

struct RobustCase {
  const char* language;
  std::string output;
  std::vector<std::string> choices;
  std::string expected;  // "A".."D" or "none"
};

TEST(AnswerExtraction, RobustReadsWhatModelsWrite) {
  const auto robust = ce::make_answer_extractor("robust");
  const std::vector<RobustCase> cases = {
      // bare and bracketed letters
      {"azerbaijani", "C", kFour, "C"},
      {"azerbaijani", "C)", kFour, "C"},
      {"azerbaijani", "(B)", kFour, "B"},
      {"turkish", "D.", kFour, "D"},
      {"azerbaijani", "C) 7", kFour, "C"},
      {"uzbek", "B. Toshkent", {"Samarqand", "Toshkent", "Buxoro", "Xiva"}, "B"},
      {"azerbaijani", "C 9 nəsil", {"3 nəsil", "8 nəsil", "9 nəsil", "1 nəsil"}, "C"},
      // an answer word then the letter
      {"turkish", "Cevap C: 12 N", kFour, "C"},
      {"azerbaijani", "Düzgün cavab B variantıdır.", kFour, "B"},
      {"azerbaijani", "Addım-addım düşünək. A variantı səhvdir. Deməli, düzgün cavab: D", kFour, "D"},
      {"uzbek", "Demak, javob B.", kFour, "B"},
      {"turkish", "Doğru cevap: **A**", kFour, "A"},
      {"azerbaijani", "The correct answer is B", kFour, "B"},
      {"azerbaijani", "Final: \\boxed{C}", kFour, "C"},
      // Cyrillic script and Cyrillic look-alike letters
      {"kazakh", "Жауап: В", kFour, "B"},
      {"kazakh", "Дұрыс жауап – С", kFour, "C"},
      {"kazakh", "4. Жауап: А, т-РНҚ.", kFour, "A"},
      {"tatar", "Җавап: Д", kFour, "D"},
      {"kazakh", "Жауабы: B", kFour, "B"},
      {"uzbek-cyrillic", "Тўғри жавоб: С", kFour, "C"},
      {"crimean-tatar-cyrillic", "Джевап: B", kFour, "B"},
      {"kazakh", "С", kFour, "C"},
      // Arabic script
      {"uyghur", "جاۋاب: B", kFour, "B"},
      {"uyghur", "توغرا جاۋاب C", kFour, "C"},
      {"uyghur", "B) ئۈرۈمچى", {"قەشقەر", "ئۈرۈمچى", "غۇلجا", "خوتەن"}, "B"},
      // the text of a choice instead of its letter
      {"azerbaijani", "Cavab: Bakı", {"Gəncə", "Bakı", "Şəki", "Quba"}, "B"},
      {"kazakh", "Алматы", {"Астана", "Шымкент", "Алматы", "Ақтөбе"}, "C"},
      {"uyghur", "غۇلجا", {"قەشقەر", "ئۈرۈمچى", "غۇلجا", "خوتەن"}, "C"},
      // an option word with the letter
      {"turkish", "C şıkkı", kFour, "C"},
      {"kazakh", "В нұсқасы дұрыс", kFour, "B"},
      // 3-choice item
      {"crimean-tatar", "Cevap: C", {"x", "y", "z"}, "C"},
      // a letter on a line of its own, then the explanation
      {"azerbaijani", "B\n\nI. Divinil - alkadien\nII. İzopren - alkadien", kFour, "B"},
      {"turkish", "(C)\nÇünkü ışık şiddeti temel bir büyüklüktür.", kFour, "C"},
      {"kazakh", "В\n\nТүсіндірме: жасуша ядросы.", kFour, "B"},
      {"uzbek", "**D**\n\nIzoh: A) va B) noto'g'ri, C) ham.", kFour, "D"},
      {"azerbaijani", "A\n\nHəll: 6² + 8² = 100.\n\nA", kFour, "A"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(show(robust->extract(c.output, ce::tumlu_language(c.language), c.choices)), c.expected)
        << c.language << ": " << c.output;
  }
}

TEST(AnswerExtraction, RobustNeverReadsALetterTheOutputDidNotChoose) {
  const auto robust = ce::make_answer_extractor("robust");
  const std::vector<RobustCase> cases = {
      // an echoed enumeration of the options
      {"azerbaijani", "A) 5 B) 7 C) 9 D) 11", kFour, "none"},
      {"kazakh", "A) 5\nB) 7\nC) 9", kFour, "none"},
      // words that start with a capital A, B, C or D
      {"azerbaijani", "Aşağıdakı variantlardan heç biri doğru deyil", kFour, "none"},
      {"turkish", "Bilmiyorum", kFour, "none"},
      {"uzbek", "Dengiz sathidan balandlik", kFour, "none"},
      // the letter 'A' as an English article, 'C' as a Russian preposition, В as "in"
      {"azerbaijani", "A plant cell has a wall", kFour, "none"},
      {"azerbaijani", "A\nplant cell has a wall", kFour, "none"},
      {"azerbaijani", "A plant cell\n\nhas a wall", kFour, "none"},
      // letters on lines of their own: a list, not a choice
      {"azerbaijani", "A\nB\nC\nD", kFour, "none"},
      {"azerbaijani", "A\n\nB\n\nHər ikisi mümkündür.", kFour, "none"},
      // a lone letter the item does not have
      {"crimean-tatar", "D\n\nAçıqlama.", {"x", "y", "z"}, "none"},
      {"kazakh", "С учетом этого сложно сказать", kFour, "none"},
      {"tatar", "В этом вопросе нет ответа", kFour, "none"},
      // letters mentioned as wrong options, with nothing chosen
      {"azerbaijani", "A variantı səhvdir, B variantı da səhvdir", kFour, "none"},
      // an answer word not followed by a letter
      {"azerbaijani", "Cavab vermək çətindir", kFour, "none"},
      {"kazakh", "Жауап: Алматы қаласы", {"x", "y", "z", "w"}, "none"},
      // a letter the item does not have
      {"crimean-tatar", "D", {"x", "y", "z"}, "none"},
      {"crimean-tatar", "Cevap: D", {"x", "y"}, "none"},
      // two choices' texts, or one inside a long discussion
      {"azerbaijani", "Bakı və ya Gəncə", {"Gəncə", "Bakı", "Şəki", "Quba"}, "none"},
      {"azerbaijani",
       "Bu sual çox maraqlıdır və bir neçə mənbədə müxtəlif cavablar verilir, məsələn Bakı",
       {"Gəncə", "Bakı", "Şəki", "Quba"},
       "none"},
      // Arabic script without a letter
      {"uyghur", "بىلمەيمەن", kFour, "none"},
      {"azerbaijani", "", kFour, "none"},
      {"azerbaijani", "   \n ", kFour, "none"},
      {"azerbaijani", std::string("\xff\xfe" "C"), kFour, "none"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(show(robust->extract(c.output, ce::tumlu_language(c.language), c.choices)), c.expected)
        << c.language << ": " << c.output;
  }
}

TEST(AnswerExtraction, RobustAgreesWithOfficialWhereOfficialIsRight) {
  // Every output whose official reading is a letter the output really chose reads the same.
  const auto official = ce::make_answer_extractor("official");
  const auto robust = ce::make_answer_extractor("robust");
  const std::vector<std::pair<const char*, std::string>> cases = {
      {"azerbaijani", "Cavab: C"},       {"azerbaijani", "B) 7"},
      {"turkish", "Doğru cevap B şıkkıdır."}, {"kazakh", "Жауап: В"},
      {"uyghur", "جاۋاب: B"},            {"karakalpak", "Juwap: D) 45"},
      {"uzbek", "To'g'ri javob: C) Yomg'ir chuvalchangi"},
  };
  for (const auto& [lang, out] : cases) {
    const auto& l = ce::tumlu_language(lang);
    EXPECT_EQ(show(robust->extract(out, l, kFour)), show(official->extract(out, l, kFour))) << out;
  }
}
