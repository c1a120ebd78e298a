// grape_score against transformers (tests/fixtures/grape, written by
// scripts/fixtures/make_grape_fixtures.py from the tiny models of tests/fixtures/lm), and the
// bookkeeping around it: skipped candidates, deduplication, shards and their merge.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include "concord/core/config.h"
#include "concord/core/files.h"
#include "concord/grape/score.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/lm/score.h"
#include "grape_test_util.h"

namespace fs = std::filesystem;
using concord::grape::testing::FixtureByteTokenizer;
using concord::grape::testing::fixture_pools;

namespace concord::grape {
namespace {

const Json& expected() {
  static const Json e = load_json_file(concord::testing::fixture("grape/expected.json"));
  return e;
}

lm::CausalLM fixture_model(const std::string& family) {
  return lm::load_pretrained(concord::testing::fixture("lm/" + family));
}

// Largest |Concord - transformers| seen, recorded as a test property (--gtest_output=xml).
double max_difference = 0.0;

void expect_matches_transformers(const std::vector<PoolScores>& got, const Json& want,
                                 const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (const auto& pool : got) {
    SCOPED_TRACE(what + " pool " + pool.id);
    const Json& rows = want.at(pool.id);
    ASSERT_EQ(pool.candidates.size(), rows.size());
    for (size_t j = 0; j < rows.size(); ++j) {
      const auto& c = pool.candidates[j];
      EXPECT_EQ(to_string(c.status), rows[j]["status"].get<std::string>()) << "candidate " << j;
      EXPECT_EQ(c.response_tokens, rows[j]["response_tokens"].get<int64_t>()) << "candidate " << j;
      EXPECT_EQ(pool.prompt_tokens, rows[j]["prompt_tokens"].get<int64_t>());
      if (rows[j]["score"].is_null()) {
        EXPECT_TRUE(std::isnan(c.score)) << "candidate " << j;
      } else {
        EXPECT_NEAR(c.score, rows[j]["score"].get<double>(), 1e-4) << "candidate " << j;
        max_difference = std::max(max_difference, std::abs(c.score - rows[j]["score"].get<double>()));
        EXPECT_NEAR(c.logprob_sum, rows[j]["logprob_sum"].get<double>(), 1e-3) << "candidate " << j;
      }
    }
  }
}

// Every family, both templates, with and without the shared-prompt path, at a batch size that
// splits pools across batches and packs several pools into one.
TEST(GrapeScore, MatchesTransformersOnEveryFamily) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  for (const std::string family : {"gpt2", "llama", "mistral", "qwen2"}) {
    auto model = fixture_model(family);
    for (const bool share : {true, false}) {
      for (const std::string tmpl : {"paper", "chat_plain"}) {
        GrapeScoreOptions o;
        o.prompt_template = tmpl == "paper" ? kPaperTemplate : "plain";
        o.batch_size = 3;
        o.share_prompt = share;
        const auto got = grape_score(model, tok, pools, o);
        expect_matches_transformers(got, expected()["families"][family][tmpl],
                                    family + "/" + tmpl + (share ? "/shared" : "/pairs"));
      }
    }
  }
  RecordProperty("max_abs_difference", std::to_string(max_difference));
}

TEST(GrapeScore, BatchSizeDoesNotChangeScores) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("llama");
  GrapeScoreOptions one;
  one.batch_size = 1;
  const auto a = grape_score(model, tok, pools, one);
  for (const bool share : {false, true}) {
    for (int64_t bs : {1, 2, 5, 64}) {
      GrapeScoreOptions o;
      o.batch_size = bs;
      o.share_prompt = share;
      const auto b = grape_score(model, tok, pools, o);
      for (size_t i = 0; i < a.size(); ++i) {
        for (size_t j = 0; j < a[i].candidates.size(); ++j) {
          if (!a[i].candidates[j].has_score()) continue;
          EXPECT_NEAR(a[i].candidates[j].score, b[i].candidates[j].score, 1e-5)
              << "batch " << bs << (share ? ", shared prompts" : "");
        }
      }
    }
  }
}

TEST(GrapeScore, SkipsAndCountsTooLongAndEmptyCandidates) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("gpt2");
  ScoreStats stats;
  const auto scores = grape_score(model, tok, pools, {}, &stats);
  EXPECT_EQ(stats.pools, 5);
  EXPECT_EQ(stats.candidates, 17);
  EXPECT_EQ(stats.skipped_too_long, 1);  // "rev"[1]: 66 positions > 64
  EXPECT_EQ(stats.skipped_empty, 1);     // "rev"[2]: ""
  EXPECT_EQ(stats.scored, 15);
  EXPECT_EQ(scores[1].candidates[1].status, CandidateStatus::too_long);
  EXPECT_EQ(scores[1].candidates[1].response_tokens, 32);  // counted, not cut
  EXPECT_EQ(scores[1].candidates[2].status, CandidateStatus::empty);

  // The limit is inclusive: a candidate of exactly max_length positions is scored, one more
  // position is not.
  const int64_t len = scores[0].prompt_tokens + scores[0].candidates[1].response_tokens;  // 53
  GrapeScoreOptions at;
  at.max_length = len;
  auto s = grape_score(model, tok, pools, at);
  EXPECT_EQ(s[0].candidates[1].status, CandidateStatus::scored);
  EXPECT_EQ(s[0].candidates[2].status, CandidateStatus::too_long);  // 56
  EXPECT_NEAR(s[0].candidates[1].score, scores[0].candidates[1].score, 1e-5);
  at.max_length = len - 1;
  s = grape_score(model, tok, pools, at);
  EXPECT_EQ(s[0].candidates[1].status, CandidateStatus::too_long);

  // Past the learned position table is refused up front, not cut.
  GrapeScoreOptions past;
  past.max_length = 65;
  EXPECT_THROW(grape_score(model, tok, pools, past), Error);
}

TEST(GrapeScore, IdenticalResponsesAreScoredOnce) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("qwen2");
  ScoreStats with, without;
  const auto a = grape_score(model, tok, pools, {}, &with);
  GrapeScoreOptions o;
  o.dedup = false;
  const auto b = grape_score(model, tok, pools, o, &without);
  // "add"[3] repeats "add"[0], "up"[2] repeats "up"[0].
  EXPECT_EQ(a[0].candidates[3].duplicate_of, 0);
  EXPECT_EQ(a[3].candidates[2].duplicate_of, 0);
  EXPECT_EQ(with.deduplicated, 2);
  EXPECT_EQ(without.deduplicated, 0);
  EXPECT_EQ(with.scored, without.scored);
  // The model ran 1 + 3 fewer response tokens ("5" and "DOG").
  EXPECT_EQ(without.response_tokens - with.response_tokens, 4);
  EXPECT_EQ(a[0].candidates[3].score, a[0].candidates[0].score);
  EXPECT_EQ(a[0].candidates[3].source, "copycat");
  for (size_t i = 0; i < a.size(); ++i) {
    for (size_t j = 0; j < a[i].candidates.size(); ++j) {
      if (a[i].candidates[j].has_score()) {
        EXPECT_NEAR(a[i].candidates[j].score, b[i].candidates[j].score, 1e-5);
      }
    }
  }
}

TEST(GrapeScore, ShardsMergeToTheUnshardedRun) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("mistral");
  const auto whole = grape_score(model, tok, pools, {});
  concord::testing::TempDir tmp;
  std::vector<fs::path> parts;
  for (int64_t r = 0; r < 3; ++r) {
    GrapeScoreOptions o;
    o.rank = r;
    o.world_size = 3;
    const auto part = grape_score(model, tok, pools, o);
    for (const auto& p : part) EXPECT_EQ(p.pool_index % 3, r);  // pools r, r + 3, ...
    parts.push_back(tmp / score_shard_name(r, 3));
    write_score_file(parts.back(), part);
  }
  EXPECT_EQ(parts[1].filename(), "scores.rank1-of-3.jsonl");
  const auto merged = merge_score_files({parts[2], parts[0], parts[1]}, 5);
  ASSERT_EQ(merged.size(), whole.size());
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(merged[i].id, whole[i].id);
    EXPECT_EQ(merged[i].pool_index, static_cast<int64_t>(i));
    EXPECT_EQ(merged[i].prompt_tokens, whole[i].prompt_tokens);
    ASSERT_EQ(merged[i].candidates.size(), whole[i].candidates.size());
    for (size_t j = 0; j < whole[i].candidates.size(); ++j) {
      const auto& m = merged[i].candidates[j];
      const auto& w = whole[i].candidates[j];
      EXPECT_EQ(m.status, w.status);
      EXPECT_EQ(m.source, w.source);
      EXPECT_EQ(m.duplicate_of, w.duplicate_of);
      EXPECT_EQ(m.response_tokens, w.response_tokens);
      // Other batch compositions pad differently: equal up to float rounding.
      if (w.has_score()) {
        EXPECT_NEAR(m.score, w.score, 1e-6);
      }
    }
  }
  const auto s = summarize(merged), t = summarize(whole);
  EXPECT_EQ(s.to_json(), t.to_json());

  // A missing part or a pool in two parts is an error, not a short file.
  EXPECT_THROW(merge_score_files({parts[0], parts[1]}, 5), Error);
  EXPECT_THROW(merge_score_files({parts[0], parts[0], parts[1], parts[2]}, 5), Error);
}

TEST(GrapeScore, ScoreFilesRoundTripExactly) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  const auto scores = grape_score(fixture_model("gpt2"), tok, pools, {});
  concord::testing::TempDir tmp;
  write_score_file(tmp / "s.jsonl", scores);
  const auto back = read_score_file(tmp / "s.jsonl");
  ASSERT_EQ(back.size(), scores.size());
  for (size_t i = 0; i < scores.size(); ++i) {
    EXPECT_EQ(back[i].to_json().dump(), scores[i].to_json().dump());
    for (size_t j = 0; j < scores[i].candidates.size(); ++j) {
      if (scores[i].candidates[j].has_score()) {
        EXPECT_EQ(back[i].candidates[j].score, scores[i].candidates[j].score);  // bit for bit
      }
    }
  }
  // Skipped candidates carry null, which JSON can hold (NaN it cannot).
  EXPECT_NE(read_file(tmp / "s.jsonl").find("\"score\":null"), std::string::npos);
  concord::testing::write_file(tmp / "bad.jsonl", scores[0].to_json().dump() + "\n{\"id\": \"x\"}\n");
  try {
    read_score_file(tmp / "bad.jsonl");
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
}

TEST(GrapeScore, TemplatesRenderAsDocumented) {
  FixtureByteTokenizer tok;
  PromptRenderer paper(kPaperTemplate, tok);
  EXPECT_FALSE(paper.is_chat_template());
  EXPECT_EQ(paper.prompt_text("Hi?"), "Question: Hi?\nAnswer: ");
  auto t = paper.render("Hi?", "Yo");
  EXPECT_EQ(t.prompt.front(), 1);  // BOS from the tokenizer's special tokens
  EXPECT_EQ(t.prompt.size(), 1u + std::string("Question: Hi?\nAnswer: ").size());
  EXPECT_EQ(t.response, (std::vector<int64_t>{'Y', 'o'}));

  PromptRenderer twice("{instruction} / {instruction}:", tok);
  EXPECT_EQ(twice.prompt_text("a"), "a / a:");

  // A chat template scores exactly the tokens the sft task trains on.
  PromptRenderer plain("plain", tok);
  EXPECT_TRUE(plain.is_chat_template());
  t = plain.render("Hi?", "Yo");
  EXPECT_EQ(t.response, (std::vector<int64_t>{' ', 'Y', 'o', 2}));
  EXPECT_EQ(t.prompt.size(), std::string("Question: Hi?\nAnswer:").size());
  PromptRenderer chatml("chatml", tok);
  t = chatml.render("Hi?", "Yo");
  const std::string scored(t.response.begin(), t.response.end());
  EXPECT_EQ(scored, "Yo<|im_end|>");

  try {
    PromptRenderer bad("Question: {x}", tok);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("{instruction}"), std::string::npos) << m;
    EXPECT_NE(m.find("chatml"), std::string::npos) << m;  // lists the chat templates
  }
}

// The shared-prompt path gives what lm::score_continuations gives on the same token ids.
TEST(GrapeScore, SharedPromptsEqualPairwiseScoring) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("gpt2");
  GrapeScoreOptions o;
  o.batch_size = 4;
  o.share_prompt = true;
  const auto got = grape_score(model, tok, pools, o);
  PromptRenderer r(kPaperTemplate, tok);
  std::vector<std::vector<int64_t>> prompts, responses;
  std::vector<std::pair<size_t, size_t>> where;
  for (size_t i = 0; i < pools.size(); ++i) {
    for (size_t j = 0; j < pools[i].responses.size(); ++j) {
      if (!got[i].candidates[j].has_score()) continue;
      auto t = r.render(pools[i].instruction, pools[i].responses[j].text);
      prompts.push_back(t.prompt);
      responses.push_back(t.response);
      where.emplace_back(i, j);
    }
  }
  const auto ref = lm::score_continuations(model, prompts, responses);
  for (size_t k = 0; k < ref.size(); ++k) {
    EXPECT_NEAR(got[where[k].first].candidates[where[k].second].score, ref[k].mean, 1e-5);
  }
}

TEST(GrapeScore, BadRecordsAreReportedWithFileAndLine) {
  concord::testing::TempDir tmp;
  std::string text;
  text += "{\"id\": \"a\", \"instruction\": \"x\", \"responses\": [{\"text\": \"y\", \"source\": \"s\"}]}\n";
  text += "{\"id\": \"b\", \"responses\": [{\"text\": \"y\"}]}\n";                 // no instruction
  text += "{\"id\": \"c\", \"instruction\": \"x\", \"responses\": []}\n";            // no responses
  text += "{\"id\": \"d\", \"instruction\": \"\xff\", \"responses\": [{\"text\": \"y\"}]}\n";  // not UTF-8
  text += "{\"id\": \"e\", \"instruction\": \"x\", \"responses\": [{\"text\": \"z\"}]}\n";
  const auto path = concord::testing::write_file(tmp / "pool.jsonl", text);
  data::JsonlOptions skip;
  skip.on_bad = data::BadRecordPolicy::skip;
  data::BadRecords bad;
  const auto pools = data::read_grape_pools(path, skip, &bad);
  ASSERT_EQ(pools.size(), 2u);
  EXPECT_EQ(pools[1].id, "e");
  ASSERT_EQ(bad.count, 3);
  EXPECT_NE(bad.examples[0].find("pool.jsonl:2"), std::string::npos) << bad.examples[0];
  EXPECT_NE(bad.examples[1].find("pool.jsonl:3"), std::string::npos) << bad.examples[1];
  EXPECT_NE(bad.examples[2].find("pool.jsonl:4"), std::string::npos) << bad.examples[2];
  try {
    data::read_grape_pools(path);
    FAIL() << "expected an error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("pool.jsonl:2"), std::string::npos) << e.what();
  }
}

TEST(GrapeScore, RejectsBadOptions) {
  const auto pools = fixture_pools();
  FixtureByteTokenizer tok;
  auto model = fixture_model("gpt2");
  GrapeScoreOptions o;
  o.rank = 2;
  o.world_size = 2;
  EXPECT_THROW(grape_score(model, tok, pools, o), Error);
  o = {};
  o.batch_size = 0;
  EXPECT_THROW(grape_score(model, tok, pools, o), Error);
  // A template that renders no prompt token has nothing to predict the first response token.
  class NoBos final : public text::Tokenizer {
   public:
    std::vector<text::TokenId> encode(std::string_view s, bool) const override {
      return std::vector<text::TokenId>(s.begin(), s.end());
    }
    std::string decode(const std::vector<text::TokenId>&, bool) const override { return ""; }
    int64_t vocab_size() const override { return 160; }
    std::optional<text::TokenId> token_to_id(std::string_view) const override { return {}; }
    std::string id_to_token(text::TokenId) const override { return ""; }
  } nobos;
  o = {};
  o.prompt_template = "{instruction}";
  data::GrapePool empty_prompt{"p", "", {{"y", "s", {}}}};
  EXPECT_THROW(grape_score(model, nobos, {empty_prompt}, o), Error);
}

}  // namespace
}  // namespace concord::grape
