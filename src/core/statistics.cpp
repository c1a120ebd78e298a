#include "concord/core/statistics.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "concord/core/error.h"

namespace concord {

double student_t_975(double dof) {
  CONCORD_CHECK(dof > 0, "student_t_975: degrees of freedom must be > 0, got ", dof);
  // t_{0.975}(dof) for the integer dofs that matter at a few seeds, then sparser; the quantile
  // is close to linear in 1/dof between table points (and 1.960 at 1/dof = 0).
  static const double kDof[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 60, 120};
  static const double kT[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                              2.262,  2.228, 2.179, 2.131, 2.086, 2.042, 2.000, 1.980};
  constexpr int n = sizeof(kDof) / sizeof(kDof[0]);
  if (dof >= kDof[n - 1]) {
    const double w = (1 / dof) / (1 / kDof[n - 1]);
    return 1.960 + w * (kT[n - 1] - 1.960);
  }
  if (dof <= kDof[0]) return kT[0];  // below 1 dof only fractional Welch dofs land; the table's end
  for (int i = 1; i < n; ++i) {
    if (dof <= kDof[i]) {
      const double x0 = 1 / kDof[i - 1], x1 = 1 / kDof[i], x = 1 / dof;
      return kT[i - 1] + (x - x0) / (x1 - x0) * (kT[i] - kT[i - 1]);
    }
  }
  return 1.960;
}

nlohmann::json SeedSummary::to_json() const {
  nlohmann::json j = {{"mean", mean}, {"stddev", stddev}, {"seeds", seeds}, {"per_seed", values}};
  j["ci_low"] = has_interval ? nlohmann::json(ci_low) : nlohmann::json(nullptr);
  j["ci_high"] = has_interval ? nlohmann::json(ci_high) : nlohmann::json(nullptr);
  return j;
}

SeedSummary summarize_over_seeds(const std::vector<double>& values, const std::vector<uint64_t>& seeds) {
  CONCORD_CHECK(!values.empty(), "summarize_over_seeds: no values");
  CONCORD_CHECK(values.size() == seeds.size(), "summarize_over_seeds: ", values.size(),
                " values for ", seeds.size(), " seeds");
  SeedSummary s;
  s.seeds = seeds;
  s.values = values;
  const double n = static_cast<double>(values.size());
  for (double v : values) s.mean += v;
  s.mean /= n;
  s.ci_low = s.ci_high = s.mean;
  if (values.size() < 2) return s;
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.stddev = std::sqrt(sq / (n - 1));
  const double half = student_t_975(n - 1) * s.stddev / std::sqrt(n);
  s.ci_low = s.mean - half;
  s.ci_high = s.mean + half;
  s.has_interval = true;
  return s;
}

SeedSummary seed_summary_from_json(const nlohmann::json& j, double scale) {
  for (const char* key : {"seeds", "per_seed"}) {
    CONCORD_CHECK(j.is_object() && j.contains(key), "seed summary: no '", key, "' in ", j.dump());
  }
  std::vector<double> values;
  for (const auto& v : j["per_seed"]) values.push_back(scale * v.get<double>());
  return summarize_over_seeds(values, j["seeds"].get<std::vector<uint64_t>>());
}

std::string with_interval(const SeedSummary& s, int decimals, const std::string& unit) {
  std::string text = fmt::format("{:.{}f}{}", s.mean, decimals, unit);
  if (s.has_interval) {
    text += fmt::format(" [{:.{}f}{}, {:.{}f}{}]", s.ci_low, decimals, unit, s.ci_high, decimals, unit);
  }
  return text;
}

MeanDifference paired_difference(const SeedSummary& a, const SeedSummary& b) {
  CONCORD_CHECK(a.seeds == b.seeds, "paired_difference: the two summaries have different seeds");
  std::vector<double> diff;
  for (size_t i = 0; i < a.values.size(); ++i) diff.push_back(a.values[i] - b.values[i]);
  const SeedSummary d = summarize_over_seeds(diff, a.seeds);
  MeanDifference out;
  out.method = "paired by seed";
  out.difference = d.mean;
  out.ci_low = d.ci_low;
  out.ci_high = d.ci_high;
  out.testable = d.has_interval;
  out.significant = d.has_interval && (d.ci_low > 0 || d.ci_high < 0);
  return out;
}

MeanDifference difference_of_means(const SeedSummary& a, const SeedSummary& b) {
  MeanDifference d;
  d.difference = a.mean - b.mean;
  d.ci_low = d.ci_high = d.difference;
  if (a.values.size() < 2 || b.values.size() < 2) return d;
  d.testable = true;
  const double na = static_cast<double>(a.values.size()), nb = static_cast<double>(b.values.size());
  const double va = a.stddev * a.stddev / na, vb = b.stddev * b.stddev / nb;
  const double se = std::sqrt(va + vb);
  if (se == 0) {  // both sides constant over seeds: any difference is exact
    d.significant = d.difference != 0;
    return d;
  }
  // Welch-Satterthwaite degrees of freedom.
  const double dof = (va + vb) * (va + vb) / (va * va / (na - 1) + vb * vb / (nb - 1));
  const double half = student_t_975(dof) * se;
  d.ci_low = d.difference - half;
  d.ci_high = d.difference + half;
  d.significant = d.ci_low > 0 || d.ci_high < 0;
  return d;
}

std::string describe_difference(const std::string& a_name, const std::string& b_name,
                                const MeanDifference& d, int decimals, const std::string& unit) {
  const std::string head = fmt::format("{} - {} = {:+.{}f}{}", a_name, b_name, d.difference, decimals, unit);
  if (!d.testable) return head + " (one seed: no interval, no test)";
  return fmt::format("{} [{:+.{}f}{}, {:+.{}f}{}] (95%, {}): {}", head, d.ci_low, decimals, unit,
                     d.ci_high, decimals, unit, d.method, d.significant ? "significant" : "not significant");
}

std::string paired_by_seed_clause(const SeedSummary& a, const SeedSummary& b, int decimals,
                                  const std::string& unit) {
  if (a.values.size() < 2 || a.seeds != b.seeds) return "";
  const MeanDifference d = paired_difference(a, b);
  return fmt::format("; paired by seed: {:+.{}f}{} [{:+.{}f}{}, {:+.{}f}{}]: {}", d.difference, decimals,
                     unit, d.ci_low, decimals, unit, d.ci_high, decimals, unit,
                     d.significant ? "significant" : "not significant");
}

}  // namespace concord
