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
