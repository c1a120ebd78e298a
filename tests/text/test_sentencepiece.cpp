// SentencePieceTokenizer through the dlopen()ed plug-in, in this process that has LibTorch loaded
// (the case that crashes when libsentencepiece is linked directly): parity with the Python
// `sentencepiece` package on the committed fixture.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/text/sentencepiece_tokenizer.h"
#include "test_support.h"
#include "tokenizer_fixtures.h"

namespace concord::text {
namespace {

using concord::testing::fixture;
using concord::testing::tokenizer_expected;
using concord::testing::unhex;
using nlohmann::json;

// Until the build makes the plug-in (or CONCORD_SPM_SHIM points at one), there is nothing to
// test; an AddressSanitizer build cannot load it (the sanitizer refuses RTLD_DEEPBIND).
#define REQUIRE_SHIM()                                                                      \
  do {                                                                                      \
    if (SentencePieceTokenizer::find_shim().empty()) {                                      \
      GTEST_SKIP() << "no loadable concord_sentencepiece_shim: build it or set "           \
                      "CONCORD_SPM_SHIM (an AddressSanitizer build cannot load it)";        \
    }                                                                                       \
  } while (0)

TEST(SentencePiece, IdsAndDecodesMatchTheSentencepiecePackage) {
  REQUIRE_SHIM();
  // LibTorch is live in this process: the plug-in's protobuf must not clash with it.
  EXPECT_EQ(torch::ones({2}).sum().item<float>(), 2.0f);
  const json doc = tokenizer_expected();
  SentencePieceTokenizer tok(fixture("tokenizers/spm/spm.model"));
  EXPECT_EQ(tok.vocab_size(), doc["spm"]["vocab_size"].get<int64_t>());
  EXPECT_EQ(tok.bos_id(), doc["spm"]["bos"].get<int>());
  EXPECT_EQ(tok.eos_id(), doc["spm"]["eos"].get<int>());
  EXPECT_EQ(tok.pad_id(), doc["spm"]["pad"].get<int>());
  size_t n = 0;
  for (const json& sample : doc["samples"]["spm"]) {
    const std::string name = sample["name"].get<std::string>();
    SCOPED_TRACE(name);
    const std::string text = sample.contains("bytes_hex") ? unhex(sample["bytes_hex"].get<std::string>())
                                                          : sample["text"].get<std::string>();
    const json& w = doc["expected"]["spm"][name];
    EXPECT_EQ(tok.encode(text), w["ids"].get<std::vector<TokenId>>());
    const auto with_bos = tok.encode(text, true);
    EXPECT_EQ(with_bos, w["ids_special"].get<std::vector<TokenId>>());
    EXPECT_EQ(tok.decode(with_bos, true), w["decode_skip"].get<std::string>());
    ++n;
  }
  EXPECT_GT(n, 40u);
}

TEST(SentencePiece, ControlTokensAndPieces) {
  REQUIRE_SHIM();
  SentencePieceTokenizer tok(fixture("tokenizers/spm/spm.model"));
  const TokenId bos = *tok.bos_id(), eos = *tok.eos_id();
  EXPECT_EQ(tok.id_to_token(bos), "<s>");
  EXPECT_EQ(tok.token_to_id("</s>"), eos);
  EXPECT_EQ(tok.token_to_id("<unk>"), 0);
  EXPECT_EQ(tok.token_to_id("surely not a piece"), std::nullopt);
  auto ids = tok.encode("Salam dünya");
  std::vector<TokenId> framed = {bos};
  framed.insert(framed.end(), ids.begin(), ids.end());
  framed.push_back(eos);
  EXPECT_EQ(tok.decode(framed, true), "Salam dünya");
  EXPECT_EQ(tok.decode(framed, false), "<s>Salam dünya</s>");
  EXPECT_THROW(tok.decode({static_cast<TokenId>(tok.vocab_size())}), Error);
  EXPECT_THROW(tok.id_to_token(-1), Error);
}

TEST(SentencePiece, BadModelFileIsAFormatError) {
  REQUIRE_SHIM();
  concord::testing::TempDir dir;
  auto path = concord::testing::write_file(dir / "bad.model", "this is not a protobuf");
  try {
    SentencePieceTokenizer tok(path);
    ADD_FAILURE() << "garbage model accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
  }
}

// libsentencepiece follows a model's normalization trie without bounds checks; the plug-in walks
// the trie first. The file is fuzz_sentencepiece's first finding: a unigram model whose
// precompiled_charsmap has one trie offset pointing past the trie (it crashed in
// Normalizer::NormalizePrefix on the first encode).
TEST(SentencePiece, CraftedNormalizationTrieIsRefusedBeforeSentencepieceReadsIt) {
  REQUIRE_SHIM();
  const std::string path =
      ::concord::testing::source_dir().string() + "/fuzz/corpus/sentencepiece/regression_charsmap_offset_outside_trie";
  try {
    SentencePieceTokenizer tok(path);
    ADD_FAILURE() << "a trie pointing outside itself was accepted";
  } catch (const FormatError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path), std::string::npos) << what;
    EXPECT_NE(what.find("precompiled_charsmap: a trie offset points outside the trie"),
              std::string::npos) << what;
  }
  // The seed it was mutated from, a model with its own normalization rules, loads and encodes.
  SentencePieceTokenizer ok(::concord::testing::source_dir().string() + "/fuzz/corpus/sentencepiece/unigram_rules");
  EXPECT_FALSE(ok.encode("the \xEF\xAC\x81x A").empty());
}

}  // namespace
}  // namespace concord::text
