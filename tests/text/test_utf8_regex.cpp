// UTF-8 repair (Concord's rule for malformed input) and the PCRE2-backed Regex.
#include <gtest/gtest.h>

#include "concord/core/error.h"
#include "concord/text/regex.h"
#include "concord/text/utf8.h"

namespace concord::text {
namespace {

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

TEST(Utf8, ReplacesEachMaximalSubpartOnce) {
  // Expected values are Python's bytes.decode("utf-8", errors="replace") of the same bytes.
  EXPECT_EQ(utf8::replace_invalid("abc"), "abc");
  EXPECT_EQ(utf8::replace_invalid("a\xFF" "b"), "a" + R + "b");
  EXPECT_EQ(utf8::replace_invalid("\xC3\x28"), R + "(");                 // lead without tail
  EXPECT_EQ(utf8::replace_invalid("\x80\x80"), R + R);                  // lone continuations
  EXPECT_EQ(utf8::replace_invalid("x\xE2\x82"), "x" + R);               // truncated at the end
  EXPECT_EQ(utf8::replace_invalid("\xC0\xAF"), R + R);                  // overlong 2-byte
  EXPECT_EQ(utf8::replace_invalid("\xE0\x80\xAF"), R + R + R);          // overlong 3-byte
  EXPECT_EQ(utf8::replace_invalid("\xED\xA0\x80"), R + R + R);          // surrogate
  EXPECT_EQ(utf8::replace_invalid("\xF4\x90\x80\x80"), R + R + R + R);  // above U+10FFFF
  EXPECT_EQ(utf8::replace_invalid("\xF0\x9F\x98 "), R + " ");           // truncated 4-byte
  EXPECT_EQ(utf8::replace_invalid("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_EQ(utf8::replace_invalid(std::string("a\0b", 3)), std::string("a\0b", 3));
  EXPECT_TRUE(utf8::is_valid("Qazaqstan Қазақстан قازاقستان 😀"));
  EXPECT_FALSE(utf8::is_valid("0123456789abcdef\xC0"));  // past the 8-byte ASCII fast path
  EXPECT_FALSE(utf8::is_valid("\xED\xBF\xBF"));
}

TEST(Regex, Gpt2PatternSplitsLikeTokenizers) {
  Regex re(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  std::vector<std::string> parts;
  const std::string text = "It's Қазақ 123  x!!\n";
  re.for_each_match(text, [&](size_t b, size_t e) { parts.push_back(text.substr(b, e - b)); });
  EXPECT_EQ(parts, (std::vector<std::string>{"It", "'s", " Қазақ", " 123", " ", " x", "!!", "\n"}));
}

TEST(Regex, UnicodeClassesAndLiterals) {
  size_t b = 0, e = 0;
  Regex letters(R"(\p{L}+)");
  const std::string uyghur = "12 ئۇيغۇر";
  ASSERT_TRUE(letters.find(uyghur, 0, b, e));
  EXPECT_EQ(uyghur.substr(b, e - b), "ئۇيغۇر");
  Regex lit = Regex::literal("a.b\\E(");
  const std::string s = "axb a.b\\E(";
  ASSERT_TRUE(lit.find(s, 0, b, e));
  EXPECT_EQ(b, 4u);
  EXPECT_EQ(e, s.size());
  try {
    Regex bad("(x", "f.json: key pre_tokenizer.pattern.Regex");
    ADD_FAILURE() << "bad pattern accepted";
  } catch (const FormatError& err) {
    EXPECT_NE(std::string(err.what()).find("f.json: key pre_tokenizer.pattern.Regex"),
              std::string::npos);
  }
}

TEST(Regex, LongWhitespaceRunDoesNotOverflowTheJitStack) {
  Regex re(R"(\s+(?!\S)|\s+)");
  const std::string text = std::string(200000, ' ') + "x";
  size_t b = 0, e = 0;
  ASSERT_TRUE(re.find(text, 0, b, e));
  EXPECT_EQ(b, 0u);
  EXPECT_EQ(e, 199999u);
}

TEST(Regex, CatastrophicPatternFailsInsteadOfHanging) {
  Regex re(R"((a+)+$)");
  const std::string text = std::string(64, 'a') + "!";
  size_t b = 0, e = 0;
  EXPECT_THROW(re.find(text, 0, b, e), Error);
}

}  // namespace
}  // namespace concord::text
