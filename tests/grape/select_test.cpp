// Selection modes on hand-made scores, the selected JSONL as the sft loader reads it, and the
// report's counts.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "concord/core/files.h"
#include "concord/data/records.h"
#include "concord/grape/select.h"
#include "test_support.h"

namespace concord::grape {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Cand {
  std::string source;
  double score;  // NaN: skipped as too long
  int64_t tokens;
};

// A pool and its scores from a list of candidates.
void add_pool(std::vector<data::GrapePool>& pools, std::vector<PoolScores>& scores,
              const std::string& id, const std::vector<Cand>& cands) {
  data::GrapePool p;
  p.id = id;
  p.instruction = "instruction " + id;
  PoolScores s;
  s.id = id;
  s.pool_index = static_cast<int64_t>(pools.size());
  s.prompt_tokens = 4;
  for (size_t j = 0; j < cands.size(); ++j) {
    p.responses.push_back({"response " + id + "/" + std::to_string(j), cands[j].source, {}});
    CandidateScore c;
    c.source = cands[j].source;
    c.response_tokens = cands[j].tokens;
    if (std::isnan(cands[j].score)) {
      c.status = CandidateStatus::too_long;
    } else {
      c.score = cands[j].score;
      c.logprob_sum = c.score * static_cast<double>(c.response_tokens);
    }
    s.candidates.push_back(c);
  }
  pools.push_back(std::move(p));
  scores.push_back(std::move(s));
}

struct Fixture {
  std::vector<data::GrapePool> pools;
  std::vector<PoolScores> scores;
  Fixture() {
    add_pool(pools, scores, "A", {{"a", -1.0, 5}, {"b", -0.5, 3}, {"c", -2.0, 8}, {"d", kNaN, 100}});
    add_pool(pools, scores, "B", {{"c", -0.25, 2}, {"a", -0.25, 9}, {"b", -3.0, 4}});  // a tie
    add_pool(pools, scores, "C", {{"d", kNaN, 90}});  // nothing eligible
  }
};

// (pool, candidate) pairs of a selection.
std::vector<std::pair<size_t, size_t>> picks(const std::vector<Selection>& s) {
  std::vector<std::pair<size_t, size_t>> out;
  for (const auto& x : s) out.emplace_back(x.pool, x.candidate);
  return out;
}

using Picks = std::vector<std::pair<size_t, size_t>>;

std::vector<Selection> run(const Fixture& f, const std::string& mode, int64_t k = 1,
                           const std::string& source = "") {
  SelectOptions o;
  o.mode = mode;
  o.top_k = k;
  o.source = source;
  return select_responses(f.pools, f.scores, o);
}

TEST(GrapeSelect, GrapeKeepsTheHighestScoresAndBreaksTiesByPoolOrder) {
  Fixture f;
  EXPECT_EQ(picks(run(f, "grape")), (Picks{{0, 1}, {1, 0}}));
  EXPECT_EQ(picks(run(f, "grape", 2)), (Picks{{0, 1}, {0, 0}, {1, 0}, {1, 1}}));
  // k beyond the eligible: every scored candidate, the too-long one never.
  EXPECT_EQ(picks(run(f, "grape", 10)), (Picks{{0, 1}, {0, 0}, {0, 2}, {1, 0}, {1, 1}, {1, 2}}));
  const auto s = run(f, "grape", 2);
  EXPECT_EQ(s[0].rank, 0);
  EXPECT_EQ(s[1].rank, 1);
}

TEST(GrapeSelect, BaselineModes) {
  Fixture f;
  EXPECT_EQ(picks(run(f, "reverse")), (Picks{{0, 2}, {1, 2}}));
  EXPECT_EQ(picks(run(f, "reverse", 2)), (Picks{{0, 2}, {0, 0}, {1, 2}, {1, 0}}));
  // Longest among the scored: 8 tokens in A (the 100-token one was skipped), 9 in B.
  EXPECT_EQ(picks(run(f, "longest")), (Picks{{0, 2}, {1, 1}}));
  EXPECT_EQ(picks(run(f, "source", 1, "c")), (Picks{{0, 2}, {1, 0}}));
  // Source d was only ever skipped: nothing to keep.
  EXPECT_TRUE(run(f, "source", 1, "d").empty());
  EXPECT_EQ(picks(run(f, "all")), (Picks{{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}}));
}

TEST(GrapeSelect, UnknownModeListsTheValidOnes) {
  Fixture f;
  try {
    run(f, "best");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const char* name : {"all", "grape", "longest", "random", "reverse", "source"}) {
      EXPECT_NE(m.find(name), std::string::npos) << m;
    }
  }
  EXPECT_THROW(run(f, "source"), Error);      // needs a source name
  EXPECT_THROW(run(f, "grape", 0), Error);    // top_k >= 1
  auto short_scores = f.scores;
  short_scores.pop_back();
  EXPECT_THROW(select_responses(f.pools, short_scores, {}), Error);  // unmerged shards
}

TEST(GrapeSelect, RandomIsSeededPerPoolAndUniform) {
  // 4000 pools of 4 eligible candidates and one skipped one.
  std::vector<data::GrapePool> pools;
  std::vector<PoolScores> scores;
  for (int i = 0; i < 4000; ++i) {
    add_pool(pools, scores, "p" + std::to_string(i),
             {{"a", -1, 1}, {"b", -2, 2}, {"x", kNaN, 99}, {"c", -3, 3}, {"d", -4, 4}});
  }
  SelectOptions o;
  o.mode = "random";
  o.seed = 7;
  const auto a = select_responses(pools, scores, o);
  const auto b = select_responses(pools, scores, o);
  EXPECT_EQ(picks(a), picks(b));
  std::map<size_t, int> counts;
  for (const auto& s : a) ++counts[s.candidate];
  EXPECT_EQ(counts.count(2), 0u);  // never the skipped one
  for (size_t j : {0u, 1u, 3u, 4u}) {
    // 1000 expected each; sd ~27, so +-150 is > 5 sd.
    EXPECT_NEAR(counts[j], 1000, 150) << "candidate " << j;
  }
  // Another seed chooses differently; a pool's choice does not depend on the other pools.
  o.seed = 8;
  EXPECT_NE(picks(select_responses(pools, scores, o)), picks(a));
  o.seed = 7;
  std::vector<data::GrapePool> tail(pools.begin() + 3000, pools.end());
  std::vector<PoolScores> tail_scores(scores.begin() + 3000, scores.end());
  const auto t = select_responses(tail, tail_scores, o);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i].candidate, a[3000 + i].candidate);
  // Top k without replacement; k = all eligible gives each once.
  o.top_k = 4;
  const auto all = select_responses(tail, tail_scores, o);
  ASSERT_EQ(all.size(), 4u * tail.size());
  for (size_t p = 0; p < tail.size(); ++p) {
    std::set<size_t> seen;
    for (size_t r = 0; r < 4; ++r) seen.insert(all[4 * p + r].candidate);
    EXPECT_EQ(seen, (std::set<size_t>{0, 1, 3, 4}));
  }
}

TEST(GrapeSelect, SelectedJsonlIsSftData) {
  Fixture f;
  const auto s = run(f, "grape");
  concord::testing::TempDir tmp;
  write_selected_jsonl(tmp / "selected.jsonl", f.pools, f.scores, s);
  const auto records = data::read_sft_records(tmp / "selected.jsonl");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].prompt, "instruction A");
  EXPECT_EQ(records[0].completion, "response A/1");
  EXPECT_EQ(records[1].completion, "response B/0");
  const auto lines = read_file(tmp / "selected.jsonl");
  const auto first = nlohmann::json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(first["id"], "A");
  EXPECT_EQ(first["source"], "b");
  EXPECT_EQ(first["score"], -0.5);
  EXPECT_EQ(first["instruction"], "instruction A");
  EXPECT_EQ(first["response"], "response A/1");
  EXPECT_EQ(first["rank"], 0);
}

TEST(GrapeSelect, ReportCountsWinsScoresAndSkips) {
  Fixture f;
  SelectOptions o;
  o.mode = "reverse";
  const auto s = select_responses(f.pools, f.scores, o);
  const auto r = make_selection_report(f.pools, f.scores, s, o, 4);
  EXPECT_EQ(r.pools, 3);
  EXPECT_EQ(r.pools_selected, 2);
  EXPECT_EQ(r.pools_without, 1);
  EXPECT_EQ(r.selected, 2);
  EXPECT_EQ(r.stats.skipped_too_long, 2);
  EXPECT_EQ(r.stats.scored, 6);
  // Reverse kept c (A) and b (B); the highest-scored were b (A) and c (B, tie with a, first).
  EXPECT_EQ(r.sources.at("c").wins, 1);
  EXPECT_EQ(r.sources.at("b").wins, 1);
  EXPECT_EQ(r.sources.at("a").wins, 0);
  EXPECT_EQ(r.sources.at("b").best, 1);
  EXPECT_EQ(r.sources.at("c").best, 1);
  EXPECT_EQ(r.sources.at("a").best, 0);
  EXPECT_EQ(r.sources.at("d").candidates, 2);
  EXPECT_EQ(r.sources.at("d").scored, 0);
  // Scores {-3, -2, -1, -0.5, -0.25, -0.25}: numpy-style linear quantiles.
  EXPECT_EQ(r.all_scores.count, 6);
  EXPECT_DOUBLE_EQ(r.all_scores.min, -3.0);
  EXPECT_DOUBLE_EQ(r.all_scores.max, -0.25);
  EXPECT_DOUBLE_EQ(r.all_scores.median, -0.75);
  EXPECT_DOUBLE_EQ(r.all_scores.q25, -1.75);
  EXPECT_DOUBLE_EQ(r.all_scores.q75, -0.3125);
  EXPECT_DOUBLE_EQ(r.all_scores.mean, -7.0 / 6.0);
  EXPECT_DOUBLE_EQ(r.selected_scores.mean, -2.5);
  // Histogram over [-3, -0.25] in 4 bins of 0.6875: -3 | -2 | -1 | -0.5, -0.25, -0.25.
  ASSERT_EQ(r.edges.size(), 5u);
  EXPECT_EQ(r.all_hist, (std::vector<int64_t>{1, 1, 1, 3}));
  EXPECT_EQ(r.selected_hist, (std::vector<int64_t>{1, 1, 0, 0}));

  Report report("t");
  r.add_to(report);
  const std::string md = report.markdown();
  EXPECT_NE(md.find("| c | 2 | 2 | 1 | 50.0% | 1 | 50.0% |"), std::string::npos) << md;
  EXPECT_NE(md.find("2 responses kept from 2 of 3 pools; 1 pools had nothing to keep"),
            std::string::npos) << md;
  concord::testing::TempDir tmp;
  const auto charts = r.write_charts(tmp.path());
  ASSERT_EQ(charts.size(), 3u);
  for (const auto& [title, path] : charts) EXPECT_GT(std::filesystem::file_size(tmp / path), 0u) << path;
  EXPECT_EQ(r.to_json()["sources"]["b"]["wins"], 1);
}

}  // namespace
}  // namespace concord::grape
