// Bad slow-tokenizer files (BpeTokenizer::from_slow_files: vocab.json + merges.txt +
// tokenizer_config.json) end in a one-line FormatError naming the file, the line or the key.
// Each case below is one that fuzz/fuzz_slow_tokenizer.cpp found escaping as another exception
// (nlohmann's type_error, which the command line does not turn into a clean message) or that
// was reported under the wrong file; and a regex \C, which could split a character.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "concord/text/regex.h"
#include "test_support.h"

namespace concord::text {
namespace {

using nlohmann::json;

// A CLIP tokenizer small enough to write by hand: letters with and without </w>, two merges.
struct SlowFiles {
  json config = {{"tokenizer_class", "CLIPTokenizer"}};
  json vocab = {{"a", 0}, {"b", 1}, {"a</w>", 2}, {"b</w>", 3}, {"ab</w>", 4}, {"ab", 5},
                {"<|startoftext|>", 6}, {"<|endoftext|>", 7}};
  std::string merges = "#version: 0.2\na b</w>\na b\n";

  std::filesystem::path write(const concord::testing::TempDir& dir) const {
    concord::testing::write_file(dir / "tokenizer_config.json", config.dump());
    concord::testing::write_file(dir / "vocab.json", vocab.dump());
    concord::testing::write_file(dir / "merges.txt", merges);
    return dir.path();
  }
};

// from_slow_files fails with a FormatError whose one line holds every needle.
void expect_format_error(const SlowFiles& files, const std::vector<std::string>& needles) {
  concord::testing::TempDir dir;
  const auto folder = files.write(dir);
  try {
    BpeTokenizer::from_slow_files(folder);
    ADD_FAILURE() << "no error; expected one mentioning " << needles.front();
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& needle : needles) EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  }
}

TEST(BpeSlowFiles, TheHandWrittenFilesLoad) {
  concord::testing::TempDir dir;
  auto tok = BpeTokenizer::from_slow_files(SlowFiles().write(dir));
  // "ab" merges through "a b</w>"; "ba" has no merge; CLIP's template adds bos and eos.
  EXPECT_EQ(tok->encode("AB ba", true), (std::vector<TokenId>{6, 4, 1, 2, 7}));
}

// Strings from the files reach the message JSON-quoted: a class name or a vocabulary token
// holding a newline (a "\n" escape in the JSON) used to split the one-line message.
TEST(BpeSlowFiles, NamesFromTheFilesAreQuotedOnOneLine) {
  SlowFiles f;
  f.config = {{"tokenizer_class", "CLIPTok\nizer"}};
  expect_format_error(f, {"tokenizer_config.json", "key 'tokenizer_class': \"CLIPTok\\nizer\" has no"});
  f = SlowFiles();
  f.vocab["bad\r\ntoken"] = "x";
  expect_format_error(f, {"vocab.json", "token \"bad\\r\\ntoken\": expected an integer id"});
}

TEST(BpeSlowFiles, MergesWithInvalidUtf8NameTheLine) {
  SlowFiles f;
  f.merges = "#version: 0.2\na b</w>\n\xff b\n";  // was nlohmann's type_error 316 from dump()
  expect_format_error(f, {"merges.txt:3", "not valid UTF-8"});
}

TEST(BpeSlowFiles, MergesOfUnknownTokensNameMergesTxtAndTheLine) {
  SlowFiles f;
  f.merges = "#version: 0.2\n\na b</w>\nb a\n";  // was "vocab.json: model.merges[1]: ..."
  expect_format_error(f, {"merges.txt:4", "\"ba\" is not in vocab.json"});
  f.merges = "a c\n";
  expect_format_error(f, {"merges.txt:1", "\"c\" is not in vocab.json"});
  f.merges = "a  b\n";
  expect_format_error(f, {"merges.txt:1", "two tokens and one space"});
}

TEST(BpeSlowFiles, ConfigMembersOfTheWrongTypeNameTheKey) {
  SlowFiles f;
  f.config = {{"tokenizer_class", "GPT2Tokenizer"}, {"add_prefix_space", "yes"}};
  expect_format_error(f, {"tokenizer_config.json", "add_prefix_space"});  // was type_error 302

  f.config = {{"tokenizer_class", "CLIPTokenizer"},
              {"eos_token", {{"content", "<|endoftext|>"}, {"normalized", 1}}}};
  expect_format_error(f, {"tokenizer_config.json", "eos_token.normalized"});  // was type_error

  f.config = {{"tokenizer_class", "CLIPTokenizer"}, {"bos_token", ""}};
  expect_format_error(f, {"tokenizer_config.json", "bos_token"});  // was "vocab.json: post_processor"
}

TEST(BpeSlowFiles, VocabularyIdsOutOfRangeNameTheToken) {
  SlowFiles f;
  f.vocab["b"] = INT64_MAX;  // next_id = id + 1 overflowed
  expect_format_error(f, {"vocab.json", "token \"b\""});
  f.vocab["b"] = -1;
  expect_format_error(f, {"vocab.json", "token \"b\""});
}

TEST(Regex, RefusesSingleCodeUnitEscape) {
  // \C matches one byte even in UTF mode: a Replace or Split on it could cut a character in two,
  // and the normalizers and BPE take well-formed UTF-8.
  EXPECT_THROW(Regex("^\\C", "tokenizer.json: normalizer.pattern.Regex"), FormatError);
  const json spec = json::parse(R"({"normalizer": {"type": "Sequence", "normalizers": [
      {"type": "Replace", "pattern": {"Regex": "^\\C"}, "content": ""}, {"type": "Lowercase"}]},
      "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}})");
  try {
    BpeTokenizer::from_json(spec.dump(), "bad/tokenizer.json");
    ADD_FAILURE() << "\\C accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("normalizer.normalizers[0].pattern"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace concord::text
