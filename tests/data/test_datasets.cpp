// Datasets on a tiny handmade corpus with the byte tokenizer (id = byte, 256 = EOS/pad), so
// every expected id, target and mask below can be checked by reading the strings.
#include <gtest/gtest.h>

#include <fstream>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/data/chat_template.h"
#include "concord/data/collate.h"
#include "concord/data/preference.h"
#include "concord/data/pretrain.h"
#include "concord/data/sft.h"
#include "concord/data/token_shard.h"
#include "concord/text/byte_tokenizer.h"
#include "test_support.h"

using namespace concord;
using namespace concord::data;
using concord::testing::TempDir;
using concord::testing::fixture;
using concord::testing::write_file;

namespace {

constexpr int64_t E = text::ByteTokenizer::kEndOfText;  // 256
constexpr int64_t X = kIgnoreIndex;                      // -100

std::vector<int64_t> bytes(const std::string& s) {
  return std::vector<int64_t>(s.begin(), s.end());
}
std::vector<int64_t> cat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
std::vector<int64_t> fill(size_t n, int64_t v) { return std::vector<int64_t>(n, v); }
std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}
std::vector<int64_t> row(const at::Tensor& t, int64_t r) {
  at::Tensor x = t[r].contiguous().to(at::kLong);
  return std::vector<int64_t>(x.data_ptr<int64_t>(), x.data_ptr<int64_t>() + x.numel());
}

}  // namespace

// ---- pretraining ------------------------------------------------------------------------------

TEST(Pretrain, PacksDocumentsWithEosIntoShiftedBlocks) {
  text::ByteTokenizer tok;
  // Stream: a b E c d e E  (7 tokens) -> floor(6 / 2) = 3 blocks of 3 tokens, overlapping by 1.
  auto ds = PretrainDataset::from_texts({"ab", "cde"}, tok, 2);
  ASSERT_EQ(ds.size(), 3);
  EXPECT_EQ(ds.num_tokens(), 7);
  EXPECT_EQ(ds.block(0), (std::vector<int64_t>{'a', 'b', E}));
  EXPECT_EQ(ds.block(1), (std::vector<int64_t>{E, 'c', 'd'}));
  EXPECT_EQ(ds.block(2), (std::vector<int64_t>{'d', 'e', E}));
  LmBatch b = ds.get_batch({2, 0});
  EXPECT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(b.input_ids.scalar_type(), at::kLong);
  EXPECT_EQ(row(b.input_ids, 0), (std::vector<int64_t>{'d', 'e'}));
  EXPECT_EQ(row(b.targets, 0), (std::vector<int64_t>{'e', E}));
  EXPECT_EQ(row(b.input_ids, 1), (std::vector<int64_t>{'a', 'b'}));
  EXPECT_EQ(row(b.targets, 1), (std::vector<int64_t>{'b', E}));
  EXPECT_THROW(ds.get_batch({3}), Error);
}

TEST(Pretrain, FromJsonlMatchesFromTexts) {
  TempDir dir;
  auto path = write_file(dir / "c.jsonl", "{\"text\": \"hello\"}\n{\"text\": \"world!\"}\n");
  text::ByteTokenizer tok;
  auto a = PretrainDataset::from_jsonl(path, tok, 4);
  auto b = PretrainDataset::from_texts({"hello", "world!"}, tok, 4);
  ASSERT_EQ(a.size(), 3);  // 13 tokens -> floor(12 / 4)
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(a.block(i), b.block(i));
}

// ---- token shards -----------------------------------------------------------------------------

TEST(TokenShard, RoundTripsBothWidths) {
  TempDir dir;
  std::vector<text::TokenId> small = {0, 1, 256, 65535, 7};
  write_token_shard(dir / "a.bin", small, 65536);
  TokenShard a(dir / "a.bin");
  EXPECT_EQ(a.token_bytes(), 2);
  EXPECT_EQ(a.size(), 5);
  EXPECT_EQ(a.vocab_size(), 65536);
  EXPECT_EQ(std::filesystem::file_size(dir / "a.bin"), 32u + 5 * 2);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(a.at(i), small[static_cast<size_t>(i)]);

  std::vector<text::TokenId> wide = {151935, 0, 65536};
  write_token_shard(dir / "b.bin", wide, 151936);
  TokenShard b(dir / "b.bin");
  EXPECT_EQ(b.token_bytes(), 4);
  std::vector<int64_t> got(3);
  b.read(0, 3, got.data());
  EXPECT_EQ(got, (std::vector<int64_t>{151935, 0, 65536}));
  EXPECT_THROW(write_token_shard(dir / "c.bin", {5}, 5), Error);   // id not below vocab
  EXPECT_THROW(write_token_shard(dir / "c.bin", {-1}, 0), Error);  // negative id
}

TEST(TokenShard, ReadsShardsWrittenByNumpy) {
  auto expected = nlohmann::json::parse(read_file(fixture("data/expected.json")));
  for (auto [name, key, width] : {std::tuple{"data/shard_u16.bin", "shard_u16", 2},
                                  std::tuple{"data/shard_u32.bin", "shard_u32", 4}}) {
    TokenShard s(fixture(name));
    auto want = expected[key].get<std::vector<int64_t>>();
    EXPECT_EQ(s.token_bytes(), width);
    ASSERT_EQ(s.size(), static_cast<int64_t>(want.size()));
    std::vector<int64_t> got(want.size());
    s.read(0, s.size(), got.data());
    EXPECT_EQ(got, want) << name;
  }
}

TEST(TokenShard, RejectsCorruptFiles) {
  TempDir dir;
  write_token_shard(dir / "ok.bin", {1, 2, 3, 4}, 10);
  std::string good = read_file(dir / "ok.bin");
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    auto path = write_file(dir / "bad.bin", bytes);
    try {
      TokenShard s(path);
      ADD_FAILURE() << "no error for: " << what;
    } catch (const FormatError& e) {
      EXPECT_EQ(std::string(e.what()), path.string() + ": " + what);
    }
  };
  std::string magic = good;
  magic[0] = 'X';
  expect_error(magic, "not a token shard (bad magic at byte 0; expected \"CNCDTOK1\")");
  expect_error(good.substr(0, 20), "truncated token shard: 20 bytes, the header alone is 32");
  expect_error(good.substr(0, good.size() - 1),
               "truncated token shard: header says 4 tokens (4 x 2 bytes) but only 7 bytes "
               "follow the header");
  expect_error(good + "zz", "token shard has 2 trailing bytes after its 4 tokens");
  std::string version = good;
  version[8] = 9;
  expect_error(version, "token shard version 9 is not supported (this build reads 1)");
  std::string width = good;
  width[12] = 3;
  expect_error(width, "bytes per token at byte 12 is 3 (valid: 2 = uint16, 4 = uint32)");
  std::string huge = good;  // N = 2^63: N * 2 would overflow a naive size check
  huge[23] = static_cast<char>(0x80);
  expect_error(huge.substr(0, 32) + "abcd",
               "truncated token shard: header says 9223372036854775812 tokens "
               "(9223372036854775812 x 2 bytes) but only 4 bytes follow the header");
  // An id at or above the recorded vocabulary size is caught where it is read.
  std::string id = good;
  id[32] = 10;
  auto path = write_file(dir / "id.bin", id);
  TokenShard s(path);
  EXPECT_THROW(s.at(0), FormatError);
  EXPECT_EQ(s.at(1), 2);
}

TEST(TokenShard, PretrainFromShardsEqualsInMemory) {
  TempDir dir;
  text::ByteTokenizer tok;
  std::string corpus;
  std::vector<std::string> docs;
  for (int i = 0; i < 40; ++i) {
    docs.push_back("document number " + std::to_string(i) + std::string(i % 7, '!'));
    corpus += nlohmann::json{{"text", docs.back()}}.dump() + "\n";
  }
  auto jsonl = write_file(dir / "c.jsonl", corpus);
  auto shards = tokenize_jsonl_to_shards(jsonl, tok, (dir / "tok").string(), 300);
  ASSERT_GE(shards.size(), 3u);
  EXPECT_EQ(shards[0].filename(), "tok_000000.bin");
  // The shards hold exactly the tokenised stream, split every 300 tokens.
  auto mem = PretrainDataset::from_texts(docs, tok, 299);
  auto sh = PretrainDataset::from_shards(shards, 299);
  EXPECT_EQ(sh.num_tokens(), mem.num_tokens());
  // 300 tokens per shard and block_size 299: each full shard is exactly one block (a block never
  // spans two shards), and the first is the in-memory stream's first block.
  EXPECT_EQ(sh.size(), static_cast<int64_t>(mem.num_tokens() / 300));
  EXPECT_EQ(sh.block(0), mem.block(0));
  std::vector<int64_t> stream;
  for (const auto& p : shards) {
    TokenShard s(p);
    std::vector<int64_t> part(static_cast<size_t>(s.size()));
    s.read(0, s.size(), part.data());
    stream.insert(stream.end(), part.begin(), part.end());
  }
  std::vector<int64_t> want;
  for (const auto& d : docs) want = cat(cat(want, bytes(d)), {E});
  EXPECT_EQ(stream, want);
}

// ---- chat templates ---------------------------------------------------------------------------

TEST(ChatTemplate, RendersExactText) {
  std::vector<ChatMessage> conv = {{"system", "S"}, {"user", "U"}, {"assistant", "A"},
                                   {"user", "U2"}, {"assistant", "A2"}};
  EXPECT_EQ(make_chat_template("chatml")->render_text(conv),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
            "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
            "<|im_start|>assistant\nA2<|im_end|>\n");
  EXPECT_EQ(make_chat_template("llama2")->render_text(conv),
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U2 [/INST] A2 </s>");
  EXPECT_EQ(make_chat_template("plain")->render_text(conv),
            "S\n\nQuestion: U\nAnswer: A</s>\n\nQuestion: U2\nAnswer: A2</s>");
  EXPECT_EQ(make_chat_template("chatml")->render_text({{"user", "hi"}}, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_THROW(make_chat_template("chatml")->render_text({{"user", "q"}, {"assistant", "a"}}, true),
               Error);
  try {
    make_chat_template("vicuna");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown chat template 'vicuna' (valid: chatml, llama2, plain)");
  }
}

TEST(ChatTemplate, TrainMaskCoversAssistantTurnsOnly) {
  text::ByteTokenizer tok;
  auto s = make_chat_template("chatml")->tokenize(
      tok, {{"user", "U"}, {"assistant", "AB"}, {"user", "V"}, {"assistant", "C"}});
  std::string trained, untrained;
  for (size_t i = 0; i < s.ids.size(); ++i) {
    (s.train[i] ? trained : untrained).push_back(static_cast<char>(s.ids[i]));
  }
  EXPECT_EQ(trained, "AB<|im_end|>C<|im_end|>");
  EXPECT_EQ(untrained,
            "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n\n"
            "<|im_start|>user\nV<|im_end|>\n<|im_start|>assistant\n\n");
  EXPECT_EQ(s.prompt_length(), 51);  // "<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
}

// ---- SFT --------------------------------------------------------------------------------------

TEST(Sft, LabelMaskingIsExact) {
  text::ByteTokenizer tok;
  SftOptions opt;
  opt.max_length = 64;
  auto ds = SftDataset::from_records({{"hi", "yo", {}}}, tok, opt);
  ASSERT_EQ(ds.size(), 1);
  const auto& s = ds.samples()[0];
  // Tokens: "Question: hi\nAnswer:" (20, no loss) " yo" (3) EOS -> 24 tokens, 23 positions.
  EXPECT_EQ(cat(std::vector<int64_t>(s.inputs.begin(), s.inputs.end()), {}),
            bytes("Question: hi\nAnswer: yo"));
  EXPECT_EQ(s.targets, cat(fill(19, X), {' ', 'y', 'o', E}));
  SftBatch b = ds.get_batch({0});
  EXPECT_EQ(row(b.targets, 0), s.targets);
  EXPECT_EQ(row(b.position_ids, 0), iota(23));
  EXPECT_EQ(row(b.segment_ids, 0), fill(23, 1));
}

TEST(Sft, PackingProducesExactRows) {
  text::ByteTokenizer tok;
  SftOptions opt;
  opt.max_length = 50;
  opt.packing = true;
  // Positions: 21 ("Question: a\nAnswer: b"), 22, 21. 21 + 22 = 43 <= 50; + 21 > 50.
  auto ds = SftDataset::from_records({{"a", "b", {}}, {"c", "dd", {}}, {"e", "f", {}}}, tok, opt);
  ASSERT_EQ(ds.rows(), (std::vector<std::vector<int64_t>>{{0, 1}, {2}}));
  SftBatch b = ds.get_batch({0, 1});
  ASSERT_EQ(b.input_ids.sizes(), (std::vector<int64_t>{2, 43}));
  EXPECT_EQ(row(b.input_ids, 0),
            cat(bytes("Question: a\nAnswer: b"), bytes("Question: c\nAnswer: dd")));
  EXPECT_EQ(row(b.targets, 0), cat(cat(fill(18, X), {' ', 'b', E}),
                                   cat(fill(18, X), {' ', 'd', 'd', E})));
  EXPECT_EQ(row(b.position_ids, 0), cat(iota(21), iota(22)));
  EXPECT_EQ(row(b.segment_ids, 0), cat(fill(21, 1), fill(22, 2)));
  EXPECT_EQ(row(b.attention_mask, 0), fill(43, 1));
  // Second row: one sample then padding (pad id = EOS, targets ignored, segment 0).
  EXPECT_EQ(row(b.input_ids, 1), cat(bytes("Question: e\nAnswer: f"), fill(22, E)));
  EXPECT_EQ(row(b.targets, 1), cat(cat(fill(18, X), {' ', 'f', E}), fill(22, X)));
  EXPECT_EQ(row(b.position_ids, 1), cat(iota(21), fill(22, 0)));
  EXPECT_EQ(row(b.segment_ids, 1), cat(fill(21, 1), fill(22, 0)));
  EXPECT_EQ(row(b.attention_mask, 1), cat(fill(21, 1), fill(22, 0)));
  EXPECT_NEAR(ds.packing_efficiency(), 64.0 / 100.0, 1e-12);
}

TEST(Sft, TruncationPolicyIsExplicitAndCounted) {
  text::ByteTokenizer tok;
  std::vector<SftRecord> recs = {{"a", "b", {}}, {"a", "a long completion", {}}};
  SftOptions opt;
  opt.max_length = 21;
  auto skipped = SftDataset::from_records(recs, tok, opt);
  EXPECT_EQ(skipped.size(), 1);
  EXPECT_EQ(skipped.stats().skipped_too_long, 1);
  opt.truncation = TruncationPolicy::truncate;
  auto cut = SftDataset::from_records(recs, tok, opt);
  ASSERT_EQ(cut.size(), 2);
  EXPECT_EQ(cut.stats().truncated, 1);
  EXPECT_EQ(cut.samples()[1].targets, cat(fill(18, X), {' ', 'a', ' '}));
  // Cut inside the prompt: nothing left to learn, so the sample is dropped and counted.
  opt.max_length = 10;
  auto none = SftDataset::from_records(recs, tok, opt);
  EXPECT_EQ(none.size(), 0);
  EXPECT_EQ(none.stats().skipped_no_target, 2);
  EXPECT_EQ(truncation_policy_from_string("truncate"), TruncationPolicy::truncate);
  EXPECT_THROW(truncation_policy_from_string("cut"), Error);
}

// ---- masks ------------------------------------------------------------------------------------

TEST(Collate, BlockCausalMaskIsExact) {
  at::Tensor seg = at::tensor(std::vector<int64_t>{1, 1, 2, 2, 0}).view({1, 5});
  at::Tensor m = block_causal_mask(seg);
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{1, 1, 5, 5}));
  EXPECT_EQ(m.scalar_type(), at::kBool);
  std::vector<int64_t> want = {1, 0, 0, 0, 0,  //
                               1, 1, 0, 0, 0,  //
                               0, 0, 1, 0, 0,  //
                               0, 0, 1, 1, 0,  //
                               0, 0, 0, 0, 1};  // padding sees only itself
  at::Tensor got = m.to(at::kLong).flatten();
  EXPECT_EQ(std::vector<int64_t>(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + 25), want);
}

TEST(Collate, PackedAttentionEqualsSeparateSamples) {
  // Softmax attention over a packed row with block_causal_mask gives, position for position,
  // the outputs of each sample attended alone with a causal mask: nothing leaks across.
  at::manual_seed(0);
  const int64_t d = 8, la = 5, lb = 3, T = la + lb + 2;  // two samples and two padding slots
  at::Tensor q = at::randn({T, d}), k = at::randn({T, d}), v = at::randn({T, d});
  auto attend = [&](const at::Tensor& Q, const at::Tensor& K, const at::Tensor& V,
                    const at::Tensor& allowed) {
    at::Tensor scores = Q.matmul(K.t()) / std::sqrt(static_cast<double>(d));
    return at::softmax(scores + additive_mask(allowed), -1).matmul(V);
  };
  std::vector<int64_t> seg_ids = {1, 1, 1, 1, 1, 2, 2, 2, 0, 0};
  at::Tensor mask = block_causal_mask(at::tensor(seg_ids).view({1, T}))[0][0];
  at::Tensor packed = attend(q, k, v, mask);
  EXPECT_FALSE(packed.isnan().any().item<bool>());
  for (auto [start, len] : {std::pair<int64_t, int64_t>{0, la}, {la, lb}}) {
    at::Tensor causal = at::ones({len, len}, at::kBool).tril();
    at::Tensor alone = attend(q.narrow(0, start, len), k.narrow(0, start, len),
                              v.narrow(0, start, len), causal);
    EXPECT_TRUE(at::allclose(packed.narrow(0, start, len), alone, 1e-6, 1e-6));
  }
}

TEST(Collate, RightAndLeftPadding) {
  std::vector<std::vector<int32_t>> seqs = {{5, 6, 7}, {8}};
  PaddedBatch r = pad_sequences(seqs, 0, PadSide::right);
  EXPECT_EQ(row(r.ids, 1), (std::vector<int64_t>{8, 0, 0}));
  EXPECT_EQ(row(r.attention_mask, 1), (std::vector<int64_t>{1, 0, 0}));
  PaddedBatch l = pad_sequences(seqs, 9, PadSide::left, 4);
  EXPECT_EQ(row(l.ids, 0), (std::vector<int64_t>{9, 5, 6, 7}));
  EXPECT_EQ(row(l.ids, 1), (std::vector<int64_t>{9, 9, 9, 8}));
  EXPECT_EQ(row(l.attention_mask, 1), (std::vector<int64_t>{0, 0, 0, 1}));
  EXPECT_EQ(row(l.lengths.view({1, 2}), 0), (std::vector<int64_t>{3, 1}));
  at::Tensor pos = position_ids_from_mask(l.attention_mask);
  EXPECT_EQ(row(pos, 0), (std::vector<int64_t>{0, 0, 1, 2}));
  EXPECT_EQ(row(pos, 1), (std::vector<int64_t>{0, 0, 0, 0}));
}

// ---- preferences ------------------------------------------------------------------------------

TEST(Preference, PairsShareThePromptAndKeepUsers) {
  TempDir dir;
  auto path = write_file(dir / "p.jsonl",
                         "{\"prompt\":\"q\",\"chosen\":\"yes\",\"rejected\":\"n\",\"user\":\"b\"}\n"
                         "{\"prompt\":\"qq\",\"chosen\":\"y\",\"rejected\":\"no!\",\"user\":\"a\"}\n");
  text::ByteTokenizer tok;
  UserIndex known;
  known.add("a");  // a user known from an earlier file keeps id 0
  auto ds = PreferenceDataset::from_jsonl(path, tok, {}, {}, &known);
  ASSERT_EQ(ds.size(), 2);
  PreferenceBatch b = ds.get_batch({0, 1});
  // "Question: q\nAnswer:" = 19 tokens of prompt; " yes" + EOS.
  EXPECT_EQ(row(b.chosen_ids, 0), cat(bytes("Question: q\nAnswer: yes"), {E}));
  EXPECT_EQ(row(b.rejected_ids, 0), cat(cat(bytes("Question: q\nAnswer: n"), {E}), fill(3, E)));
  EXPECT_EQ(row(b.rejected_mask, 0), cat(fill(22, 1), fill(3, 0)));
  EXPECT_EQ(row(b.prompt_lengths.view({1, 2}), 0), (std::vector<int64_t>{19, 20}));
  EXPECT_EQ(row(b.chosen_lengths.view({1, 2}), 0), (std::vector<int64_t>{24, 23}));
  EXPECT_EQ(row(b.user_index.view({1, 2}), 0), (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(ds.users().names(), (std::vector<std::string>{"a", "b"}));
}
