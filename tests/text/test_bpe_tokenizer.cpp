// Parity of BpeTokenizer with the Python `tokenizers` package on the committed fixtures
// (tests/fixtures/tokenizers, made by scripts/fixtures/make_tokenizer_fixtures.py), and its
// behaviour on bad tokenizer.json files.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <thread>

#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "concord/text/tokenizer.h"
#include "test_support.h"
#include "tokenizer_fixtures.h"

namespace concord::text {
namespace {

using concord::testing::fixture;
using concord::testing::tokenizer_expected;
using concord::testing::unhex;
using nlohmann::json;

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The sample as bytes: malformed ones are stored as hex, the rest as text.
std::string sample_bytes(const json& sample) {
  return sample.contains("bytes_hex") ? unhex(sample["bytes_hex"].get<std::string>())
                                      : sample["text"].get<std::string>();
}

std::vector<TokenId> ids_of(const json& j) { return j.get<std::vector<TokenId>>(); }

class BpeParity : public ::testing::TestWithParam<std::string> {};

TEST_P(BpeParity, IdsAndDecodesMatchHuggingFaceTokenizers) {
  const std::string name = GetParam();
  auto tok = BpeTokenizer::from_file(fixture("tokenizers/" + name + "/tokenizer.json"));
  const json& samples = tokenizer_expected()["samples"][name];
  const json& want = tokenizer_expected()["expected"][name];
  ASSERT_GT(samples.size(), 40u);
  for (const json& sample : samples) {
    const std::string sname = sample["name"].get<std::string>();
    SCOPED_TRACE(name + " / " + sname);
    const std::string text = sample_bytes(sample);
    const json& w = want[sname];
    EXPECT_EQ(tok->encode(text, false), ids_of(w["ids"]));
    const auto with_special = tok->encode(text, true);
    EXPECT_EQ(with_special, ids_of(w["ids_special"]));
    EXPECT_EQ(tok->decode(ids_of(w["ids_special"]), false), w["decode"].get<std::string>());
    EXPECT_EQ(tok->decode(ids_of(w["ids_special"]), true), w["decode_skip"].get<std::string>());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BpeParity,
                         ::testing::Values("gpt2", "llama3", "llama2", "mistral"));

TEST(BpeTokenizer, MergeQueueAgreesWithSimpleMergeOnEveryWord) {
  for (const char* name : {"gpt2", "llama2"}) {
    auto tok = BpeTokenizer::from_file(fixture(std::string("tokenizers/") + name + "/tokenizer.json"));
    size_t words = 0;
    for (const json& sample : tokenizer_expected()["samples"][name]) {
      const std::string text = sample_bytes(sample);
      // Words of every length from the sample, including whole sentences (hundreds of symbols).
      for (size_t len : {3, 8, 20, 60, 1000}) {
        for (size_t i = 0; i < text.size(); i += len) {
          std::string w = text.substr(i, len);
          EXPECT_EQ(tok->bpe_word(w, false), tok->bpe_word(w, true)) << name << ": " << w;
          ++words;
        }
      }
    }
    EXPECT_GT(words, 500u);
  }
}

TEST(BpeTokenizer, BothMergeFormsGiveTheSameIds) {
  // gpt2's fixture stores merges as "a b"; rewrite them as [a, b] (the format since tokenizers
  // 0.20) and compare.
  json spec = json::parse(read_text(fixture("tokenizers/gpt2/tokenizer.json")));
  ASSERT_TRUE(spec["model"]["merges"][0].is_string());
  for (auto& m : spec["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    m = json::array({s.substr(0, sp), s.substr(sp + 1)});
  }
  auto strings = BpeTokenizer::from_file(fixture("tokenizers/gpt2/tokenizer.json"));
  auto arrays = BpeTokenizer::from_json(spec.dump());
  for (const json& sample : tokenizer_expected()["samples"]["gpt2"]) {
    const std::string text = sample_bytes(sample);
    EXPECT_EQ(strings->encode(text), arrays->encode(text));
  }
}

TEST(BpeTokenizer, SpecialIdsAndVocabulary) {
  auto llama2 = load_tokenizer(fixture("tokenizers/llama2"));  // a folder: picks tokenizer.json
  EXPECT_EQ(llama2->bos_id(), 1);
  EXPECT_EQ(llama2->eos_id(), 2);
  EXPECT_EQ(llama2->token_to_id("<0x41>"), 3 + 0x41);
  EXPECT_EQ(llama2->id_to_token(3 + 0x0A), "<0x0A>");
  EXPECT_EQ(llama2->token_to_id("no such token"), std::nullopt);

  auto llama3 = load_tokenizer(fixture("tokenizers/llama3/tokenizer.json"));
  const auto bot = llama3->token_to_id("<|begin_of_text|>");
  ASSERT_TRUE(bot.has_value());
  EXPECT_EQ(llama3->bos_id(), bot);
  EXPECT_EQ(llama3->eos_id(), llama3->token_to_id("<|end_of_text|>"));
  EXPECT_EQ(llama3->encode("x", true).front(), *bot);

  auto gpt2 = load_tokenizer(fixture("tokenizers/gpt2/tokenizer.json"));
  EXPECT_EQ(gpt2->bos_id(), std::nullopt);  // GPT-2 has no BOS and adds none
  EXPECT_EQ(gpt2->eos_id(), gpt2->token_to_id("<|endoftext|>"));
  EXPECT_EQ(gpt2->pad_id(), gpt2->token_to_id("<|pad|>"));
  ASSERT_TRUE(gpt2->token_to_id("Ġto").has_value());
  EXPECT_EQ(gpt2->id_to_token(*gpt2->token_to_id("Ġto")), "Ġto");  // stored form, Ġ = space
  // The largest id + 1: the last added token is the largest id.
  EXPECT_EQ(gpt2->vocab_size(), *gpt2->token_to_id("concordia") + 1);
  EXPECT_THROW(gpt2->decode({static_cast<TokenId>(gpt2->vocab_size())}), Error);
  EXPECT_THROW(gpt2->decode({-1}), Error);
}

TEST(BpeTokenizer, ConcurrentEncodingMatchesSequential) {
  auto tok = BpeTokenizer::from_file(fixture("tokenizers/llama3/tokenizer.json"));
  std::vector<std::string> texts;
  for (const json& sample : tokenizer_expected()["samples"]["llama3"])
    texts.push_back(sample_bytes(sample));
  std::vector<std::vector<TokenId>> want;
  for (const json& sample : tokenizer_expected()["samples"]["llama3"]) {
    want.push_back(ids_of(
        tokenizer_expected()["expected"]["llama3"][sample["name"].get<std::string>()]["ids"]));
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (tok->encode(texts[i]) != want[i]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// The hand-written fuzz seeds exercise parts the trained fixtures do not (Split behaviours other
// than Isolated, invert, Digits, Metaspace split, unk fusing, a Metaspace decoder that keeps
// spaces). Expected values: Python tokenizers 0.23.3 on the same files.
struct SeedCase {
  const char* file;
  std::string text;
  std::vector<TokenId> ids_special;
  std::string decode, decode_skip;
};

TEST(BpeTokenizer, FuzzSeedsMatchTokenizers) {
  const std::vector<SeedCase> cases = {
      {"split_behaviors", "ab-ab b a-b  ba 12ab",
       {4, 0, 4, 1, 4, 3, 0, 4, 1, 4, 1, 4, 0, 4, 3, 4, 1, 4, 1, 4, 0, 4, 4, 4, 0, 4, 1},
       "a b -a b b a - b b a   a b", "a b -a b b a - b b a   a b"},
      {"split_behaviors", "--a b-", {4, 3, 4, 3, 0, 4, 1, 4, 3}, "- -a b -", "- -a b -"},
      {"metaspace_fallback", "ab \xC3\xA9 A zz", {1, 9, 5, 3, 4, 5, 2, 5, 0},
       "<s> ab \xC3\xA9 A <unk>", "ab \xC3\xA9 A "},
      {"metaspace_fallback", "<s>ab ab", {1, 1, 9, 9}, "<s><s> ab ab", "ab ab"},
      {"byte_level_split", "ab ab<|endoftext|>ab", {5, 2, 4, 5, 2},
       "<|endoftext|>ab ab<|endoftext|>ab", "ab abab"},
      {"byte_level_split", "ba  ab", {5, 1, 0, 3, 4}, "<|endoftext|>ba  ab", "ba  ab"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.file) + ": " + c.text);
    auto tok = BpeTokenizer::from_file(::concord::testing::source_dir() / "fuzz/corpus/tokenizer_json" /
                                       (std::string(c.file) + ".json"));
    EXPECT_EQ(tok->encode(c.text, true), c.ids_special);
    EXPECT_EQ(tok->decode(c.ids_special, false), c.decode);
    EXPECT_EQ(tok->decode(c.ids_special, true), c.decode_skip);
  }
}

// ---- bad files: a FormatError that names the file and the JSON key ----------------------------

json minimal_bpe() {
  return json::parse(R"({
    "version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
    "post_processor": null, "decoder": null,
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}})");
}

void expect_format_error(const json& spec, const std::string& needle) {
  try {
    BpeTokenizer::from_json(spec.dump(), "bad/tokenizer.json");
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad/tokenizer.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

TEST(BpeTokenizer, MinimalFileWorks) {
  auto tok = BpeTokenizer::from_json(minimal_bpe().dump());
  EXPECT_EQ(tok->encode("abba"), (std::vector<TokenId>{2, 1, 0}));
  EXPECT_EQ(tok->decode({2, 1}), "ab b");  // no decoder: HF joins tokens with spaces
}

TEST(BpeTokenizer, RejectsUnsupportedAndMalformedParts) {
  json j = minimal_bpe();
  j["model"]["type"] = "WordPiece";
  expect_format_error(j, "model.type");

  j = minimal_bpe();
  j["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  expect_format_error(j, "Unigram");

  j = minimal_bpe();
  j["normalizer"] = json::parse(R"({"type": "Sequence", "normalizers": [
      {"type": "Prepend", "prepend": "x"}, {"type": "BertNormalizer"}]})");
  expect_format_error(j, "normalizer.normalizers[1].type");

  j = minimal_bpe();
  j["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
      {"type": "ByteLevel", "add_prefix_space": false}, {"type": "Digits"}]})");
  expect_format_error(j, "pre_tokenizer.pretokenizers[0].type");

  j = minimal_bpe();
  j["pre_tokenizer"] = json::parse(R"({"type": "Split", "pattern": {"Regex": "(unclosed"},
      "behavior": "Isolated", "invert": false})");
  expect_format_error(j, "pre_tokenizer.pattern.Regex");

  j = minimal_bpe();
  j["model"]["merges"].push_back("a c");
  expect_format_error(j, "model.merges[1]");

  j = minimal_bpe();
  j["model"]["merges"].push_back("b a");
  expect_format_error(j, "merged token \"ba\"");

  j = minimal_bpe();
  j["model"]["vocab"]["c"] = "three";
  expect_format_error(j, "model.vocab.c");

  j = minimal_bpe();
  j["model"]["vocab"]["c"] = 2000000000;  // would make a 2e9-entry table
  expect_format_error(j, "model.vocab");

  j = minimal_bpe();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_format_error(j, "decoder.type");

  j = minimal_bpe();
  j["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}], "special_tokens": {}})");
  expect_format_error(j, "post_processor.special_tokens.<s>");

  j = minimal_bpe();
  j["added_tokens"] = json::parse(R"([{"id": 3, "content": ""}])");
  expect_format_error(j, "added_tokens[0].content");

  j = minimal_bpe();
  j["model"]["dropout"] = 0.1;
  expect_format_error(j, "model.dropout");

  expect_format_error(json::array(), "(root)");
  try {
    BpeTokenizer::from_json("{\"model\": ", "bad/tokenizer.json");
    ADD_FAILURE() << "truncated JSON accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad/tokenizer.json: not valid JSON"), std::string::npos);
  }
}

// A crafted file cannot make the id table larger than its contents justify: model.vocab's ids
// are bounded by 4x its entries + 1024, and added tokens may extend the table by at most
// 4x their number + 1024 in all, however their ids are spread (each id far past the previous one
// used to be allowed, which grew the table quadratically in the file's size).
TEST(BpeTokenizer, CraftedIdsCannotInflateTheIdTable) {
  json j = minimal_bpe();
  const size_t n = 200;
  const int64_t limit = 3 + 4 * static_cast<int64_t>(n) + 1024;  // 3 model ids
  j["added_tokens"] = json::array();
  for (size_t i = 0; i < n; ++i) {
    // Each id 1000 past the previous: always within 4n + 1024 = 1824 of the table so far, but
    // the second is already past 3 + 1824 in all.
    j["added_tokens"].push_back({{"id", 3 + 1000 * static_cast<int64_t>(i + 1) - 1},
                                 {"content", "<t" + std::to_string(i) + ">"}});
  }
  expect_format_error(j, "added_tokens[1].id");
  try {
    BpeTokenizer::from_json(j.dump(), "bad/tokenizer.json");
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("far beyond the vocabulary"), std::string::npos) << e.what();
  }

  // Ids up to the limit are fine, however sparse: the table ends at the largest.
  j["added_tokens"] = json::array();
  for (size_t i = 0; i < n; ++i) {
    j["added_tokens"].push_back({{"id", limit - 1 - static_cast<int64_t>(i) * 7},
                                 {"content", "<t" + std::to_string(i) + ">"}});
  }
  auto tok = BpeTokenizer::from_json(j.dump());
  EXPECT_EQ(tok->vocab_size(), limit);
  EXPECT_EQ(tok->token_to_id("<t0>"), limit - 1);
  j["added_tokens"].push_back({{"id", limit + 4}, {"content", "<over>"}});  // n + 1 tokens now
  expect_format_error(j, "added_tokens[200].id");

  // A model vocabulary whose largest id is far above its size is refused the same way.
  j = minimal_bpe();
  j["model"]["vocab"]["c"] = 4 * 4 + 1023;  // 4 tokens: the largest id allowed
  EXPECT_EQ(BpeTokenizer::from_json(j.dump())->vocab_size(), 4 * 4 + 1024);
  j["model"]["vocab"]["c"] = 4 * 4 + 1024;
  expect_format_error(j, "ids are too sparse");
}

TEST(BpeTokenizer, LoadTokenizerNamesTheFile) {
  concord::testing::TempDir dir;
  auto bad = concord::testing::write_file(dir / "tokenizer.json", R"({"model": {"type": "WordPiece"}})");
  try {
    load_tokenizer(dir.path());
    ADD_FAILURE() << "WordPiece accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_tokenizer(dir / "missing.json"), Error);
  EXPECT_THROW(load_tokenizer(concord::testing::write_file(dir / "x.txt", "")), Error);
}

}  // namespace
}  // namespace concord::text
