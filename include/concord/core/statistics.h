// Figures measured once per seed, summarised the same way by every experiment (PanGu-π's
// ablation, GRAPE, MaxMin-RLHF, KOALA): the mean, the sample standard deviation and the 95%
// confidence interval of the mean by Student's t with n - 1 degrees of freedom, which is what a
// reader needs to tell a difference between variants from seed noise at n = 3. Two variants are
// compared by Welch's interval for the difference of their means (no equal-variance assumption).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace concord {

/// The 0.975 quantile of Student's t with `dof` degrees of freedom (the half-width factor of a
/// two-sided 95% interval); dof may be fractional (Welch), must be > 0. Exact to 3 decimals
/// at the tabled integer dofs (1-10, 12, 15, 20, 30, 60, 120), interpolated in 1/dof between
/// them: within 0.1% from 2 dof up, and on the wide (conservative) side between 1 and 2.
double student_t_975(double dof);

struct SeedSummary {
  std::vector<uint64_t> seeds;
  std::vector<double> values;  ///< one per seed, in the order of `seeds`
  double mean = 0;
  double stddev = 0;           ///< sample standard deviation (n - 1); 0 for one seed
  /// 95% interval of the mean: mean -/+ t(n-1) * stddev / sqrt(n). With one seed there is no
  /// interval: both are the mean and `has_interval` is false.
  double ci_low = 0, ci_high = 0;
  bool has_interval = false;

  /// {"mean", "stddev", "ci_low", "ci_high", "seeds", "per_seed": [values]}; with one seed
  /// ci_low and ci_high are null.
  nlohmann::json to_json() const;
};

/// Summarises `values` (one per seed). Throws when the counts differ or there are no values.
SeedSummary summarize_over_seeds(const std::vector<double>& values, const std::vector<uint64_t>& seeds);

/// A summary back from its to_json() form (its "seeds" and "per_seed"), each value times
/// `scale` (100 for a share shown in %). Throws naming a missing key.
SeedSummary seed_summary_from_json(const nlohmann::json& j, double scale = 1);

/// "87.4% [80.1%, 94.7%]": the mean and its 95% interval; the mean alone with one seed.
std::string with_interval(const SeedSummary& s, int decimals, const std::string& unit = "");

struct MeanDifference {
  double difference = 0;         ///< mean(a) - mean(b)
  double ci_low = 0, ci_high = 0;  ///< the 95% interval for it
  std::string method = "Welch";  ///< "Welch" or "paired by seed"
  bool testable = false;         ///< both sides have >= 2 seeds
  bool significant = false;      ///< the interval excludes 0
};

/// Welch's 95% interval for mean(a) - mean(b): the seeds of a and b as independent samples.
MeanDifference difference_of_means(const SeedSummary& a, const SeedSummary& b);

/// The mean of the per-seed differences a_i - b_i with its Student-t 95% interval, for variants
/// that share everything a seed decides (data order, initial weights, the teacher): the pairing
/// cancels what a seed moves for all variants, which Welch's interval counts as noise. Throws
/// unless a and b have the same seeds in the same order.
MeanDifference paired_difference(const SeedSummary& a, const SeedSummary& b);

/// "; paired by seed: +1.2 [+0.3, +2.1]: significant" (paired_difference of a and b), to follow
/// a describe_difference line; "" unless a and b have the same seeds, at least two.
std::string paired_by_seed_clause(const SeedSummary& a, const SeedSummary& b, int decimals,
                                  const std::string& unit = "");

/// One line a report can print: "grape - random = +4.2 [+1.1, +7.3] (95%, Welch): significant"
/// or "... not significant at 3 seeds"; `unit` follows every number ("", "%", " nats").
std::string describe_difference(const std::string& a_name, const std::string& b_name,
                                const MeanDifference& d, int decimals = 2, const std::string& unit = "");

}  // namespace concord
