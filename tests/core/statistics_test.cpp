#include <gtest/gtest.h>

#include <cmath>

#include "concord/core/error.h"
#include "concord/core/statistics.h"

using namespace concord;

TEST(Statistics, StudentQuantileMatchesTablesAndInterpolates) {
  EXPECT_NEAR(student_t_975(1), 12.706, 1e-9);
  EXPECT_NEAR(student_t_975(2), 4.303, 1e-9);
  EXPECT_NEAR(student_t_975(4), 2.776, 1e-9);
  EXPECT_NEAR(student_t_975(25), 2.0595, 1e-3);   // not tabled: 2.0595 from R's qt(0.975, 25)
  EXPECT_NEAR(student_t_975(1e9), 1.960, 1e-6);   // the normal quantile in the limit
  EXPECT_GT(student_t_975(1.5), student_t_975(2));
  EXPECT_THROW(student_t_975(0), Error);
}

TEST(Statistics, SummaryOfThreeSeedsHasTheStudentInterval) {
  const auto s = summarize_over_seeds({1, 2, 3}, {7, 8, 9});
  EXPECT_DOUBLE_EQ(s.mean, 2);
  EXPECT_DOUBLE_EQ(s.stddev, 1);
  EXPECT_TRUE(s.has_interval);
  EXPECT_NEAR(s.ci_high - s.mean, 4.303 / std::sqrt(3.0), 1e-9);
  EXPECT_NEAR(s.mean - s.ci_low, 4.303 / std::sqrt(3.0), 1e-9);
  const auto j = s.to_json();
  EXPECT_EQ(j["seeds"], nlohmann::json({7, 8, 9}));
  EXPECT_EQ(j["per_seed"], nlohmann::json({1.0, 2.0, 3.0}));
  EXPECT_DOUBLE_EQ(j["ci_low"].get<double>(), s.ci_low);

  const auto one = summarize_over_seeds({5}, {1});
  EXPECT_FALSE(one.has_interval);
  EXPECT_TRUE(one.to_json()["ci_low"].is_null());
  EXPECT_THROW(summarize_over_seeds({1, 2}, {1}), Error);
  EXPECT_THROW(summarize_over_seeds({}, {}), Error);
}

TEST(Statistics, WelchSeparatesDistinctMeansAndNotOverlappingOnes) {
  const auto a = summarize_over_seeds({1, 2, 3}, {1, 2, 3});
  // Equal variances and n: Welch's dof is 2(n - 1) = 4, the half-width t(4) * sqrt(2/3).
  const auto far = difference_of_means(a, summarize_over_seeds({10, 11, 12}, {1, 2, 3}));
  EXPECT_DOUBLE_EQ(far.difference, -9);
  EXPECT_NEAR(far.ci_high - far.difference, 2.776 * std::sqrt(2.0 / 3.0), 1e-9);
  EXPECT_TRUE(far.testable && far.significant);
  const auto near = difference_of_means(a, summarize_over_seeds({2, 3, 4}, {1, 2, 3}));
  EXPECT_TRUE(near.testable);
  EXPECT_FALSE(near.significant);
  EXPECT_NE(describe_difference("a", "b", near).find("not significant"), std::string::npos);
  EXPECT_NE(describe_difference("a", "b", far, 1, "%").find("a - b = -9.0% [-11.3%, -6.7%]"),
            std::string::npos);
  const auto single = difference_of_means(summarize_over_seeds({1}, {1}), a);
  EXPECT_FALSE(single.testable);
  EXPECT_FALSE(single.significant);
}

TEST(Statistics, PairedDifferenceCancelsWhatASeedMovesForBoth) {
  // Each seed shifts both variants alike; b is always 1 above a. Welch sees the seed spread as
  // noise, the pairing sees a constant difference.
  const auto a = summarize_over_seeds({1, 5, 9}, {1, 2, 3});
  const auto b = summarize_over_seeds({2, 6, 10.5}, {1, 2, 3});
  EXPECT_FALSE(difference_of_means(b, a).significant);
  const auto p = paired_difference(b, a);
  EXPECT_EQ(p.method, "paired by seed");
  EXPECT_NEAR(p.difference, 3.5 / 3, 1e-12);
  // differences 1, 1, 1.5: sd 0.288675, half-width t(2) * sd / sqrt(3)
  EXPECT_NEAR(p.ci_high - p.difference, 4.303 * 0.2886751345948129 / std::sqrt(3.0), 1e-9);
  EXPECT_TRUE(p.significant);
  EXPECT_NE(describe_difference("b", "a", p).find("(95%, paired by seed): significant"), std::string::npos);
  EXPECT_THROW(paired_difference(a, summarize_over_seeds({1, 2, 3}, {1, 2, 4})), Error);
}

TEST(Statistics, SummaryRoundTripsThroughJsonAndPrintsItsInterval) {
  const auto s = summarize_over_seeds({0.5, 0.7}, {3, 4});
  const auto back = seed_summary_from_json(s.to_json(), 100);
  EXPECT_EQ(back.seeds, s.seeds);
  EXPECT_DOUBLE_EQ(back.mean, 60);
  EXPECT_EQ(with_interval(summarize_over_seeds({2}, {1}), 1, "%"), "2.0%");
  EXPECT_EQ(with_interval(summarize_over_seeds({1, 3}, {1, 2}), 1), "2.0 [-10.7, 14.7]");
  EXPECT_THROW(seed_summary_from_json(nlohmann::json{{"seeds", {1}}}), Error);
}
