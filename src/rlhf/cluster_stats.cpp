#include "concord/rlhf/cluster_stats.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "concord/core/error.h"

namespace concord::rlhf {

double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}

Eigen::MatrixXd user_log_likelihood(const Eigen::MatrixXd& d, const std::vector<int64_t>& user,
                                    const std::vector<double>& margin, int64_t num_users) {
  CONCORD_CHECK(static_cast<int64_t>(user.size()) == d.rows() && margin.size() == user.size(),
                "user_log_likelihood: ", d.rows(), " pairs but ", user.size(), " users and ",
                margin.size(), " margins");
  Eigen::MatrixXd L = Eigen::MatrixXd::Zero(num_users, d.cols());
  for (Eigen::Index p = 0; p < d.rows(); ++p) {
    const int64_t u = user[static_cast<size_t>(p)];
    if (u < 0) continue;
    CONCORD_CHECK(u < num_users, "user_log_likelihood: user ", u, " >= ", num_users);
    for (Eigen::Index k = 0; k < d.cols(); ++k) {
      L(u, k) += log_sigmoid(d(p, k) - margin[static_cast<size_t>(p)]);
    }
  }
  return L;
}

double soft_assign(const Eigen::MatrixXd& L, const Eigen::VectorXd& log_pi,
                   const std::vector<bool>& active, Eigen::MatrixXd& gamma) {
  gamma = Eigen::MatrixXd::Zero(L.rows(), L.cols());
  double total = 0;
  for (Eigen::Index u = 0; u < L.rows(); ++u) {
    if (!active[static_cast<size_t>(u)]) continue;
    const Eigen::RowVectorXd a = L.row(u) + log_pi.transpose();
    const double m = a.maxCoeff();
    const double lse = m + std::log((a.array() - m).exp().sum());
    gamma.row(u) = (a.array() - lse).exp();
    total += lse;
  }
  return total;
}

std::vector<int64_t> kmeans_pp(const Eigen::MatrixXd& x, int64_t k, std::mt19937_64& rng,
                               int64_t iterations) {
  const Eigen::Index n = x.rows();
  CONCORD_CHECK(k >= 1 && k <= n, "kmeans_pp: k = ", k, " with ", n, " points");
  Eigen::MatrixXd centres(k, x.cols());
  std::uniform_int_distribution<Eigen::Index> first(0, n - 1);
  centres.row(0) = x.row(first(rng));
  Eigen::VectorXd nearest = (x.rowwise() - centres.row(0)).rowwise().squaredNorm();
  for (int64_t c = 1; c < k; ++c) {
    // D^2 sampling: a point is the next centre with probability proportional to its squared
    // distance to the nearest centre so far.
    const double total = nearest.sum();
    Eigen::Index pick = 0;
    if (total > 0) {
      std::uniform_real_distribution<double> draw(0.0, total);
      double target = draw(rng);
      for (pick = 0; pick < n - 1 && target >= nearest(pick); ++pick) target -= nearest(pick);
    } else {
      pick = first(rng);
    }
    centres.row(c) = x.row(pick);
    nearest = nearest.cwiseMin((x.rowwise() - centres.row(c)).rowwise().squaredNorm());
  }
  std::vector<int64_t> assign(static_cast<size_t>(n), -1);
  for (int64_t it = 0; it < iterations; ++it) {
    bool changed = false;
    Eigen::VectorXd dist(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      Eigen::Index best = 0;
      dist(i) = (centres.rowwise() - x.row(i)).rowwise().squaredNorm().minCoeff(&best);
      if (assign[static_cast<size_t>(i)] != best) changed = true;
      assign[static_cast<size_t>(i)] = best;
    }
    Eigen::MatrixXd sums = Eigen::MatrixXd::Zero(k, x.cols());
    Eigen::VectorXd counts = Eigen::VectorXd::Zero(k);
    for (Eigen::Index i = 0; i < n; ++i) {
      sums.row(assign[static_cast<size_t>(i)]) += x.row(i);
      counts(assign[static_cast<size_t>(i)]) += 1;
    }
    for (int64_t c = 0; c < k; ++c) {
      if (counts(c) > 0) {
        centres.row(c) = sums.row(c) / counts(c);
        continue;
      }
      // An emptied cluster restarts at the point farthest from its own centre.
      Eigen::Index far = 0;
      dist.maxCoeff(&far);
      centres.row(c) = x.row(far);
      dist(far) = 0;
      changed = true;
    }
    if (!changed) break;
  }
  return assign;
}

namespace {

// The contingency table N[cluster, group] of the items with both a cluster and a group; rows and
// columns are the distinct ids in ascending order (any non-negative ids, however large).
Eigen::MatrixXd contingency(const std::vector<int64_t>& clusters,
                            const std::vector<int64_t>& truth) {
  CONCORD_CHECK(clusters.size() == truth.size(), "clustering metrics: ", clusters.size(),
                " clusters but ", truth.size(), " groups");
  std::vector<int64_t> row_ids, col_ids;
  for (size_t i = 0; i < clusters.size(); ++i) {
    if (truth[i] < 0 || clusters[i] < 0) continue;
    row_ids.push_back(clusters[i]);
    col_ids.push_back(truth[i]);
  }
  auto distinct = [](std::vector<int64_t> ids) {
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
  };
  const std::vector<int64_t> rows = distinct(row_ids), cols = distinct(col_ids);
  auto position = [](const std::vector<int64_t>& ids, int64_t id) {
    return static_cast<Eigen::Index>(std::lower_bound(ids.begin(), ids.end(), id) - ids.begin());
  };
  Eigen::MatrixXd table = Eigen::MatrixXd::Zero(static_cast<Eigen::Index>(rows.size()),
                                                static_cast<Eigen::Index>(cols.size()));
  for (size_t i = 0; i < row_ids.size(); ++i) {
    table(position(rows, row_ids[i]), position(cols, col_ids[i])) += 1;
  }
  return table;
}

// Entropy of the distribution counts / n, empty classes left out.
double entropy(const Eigen::VectorXd& counts, double n) {
  double h = 0;
  for (Eigen::Index i = 0; i < counts.size(); ++i) {
    if (counts(i) > 0) h -= (counts(i) / n) * std::log(counts(i) / n);
  }
  return h;
}

}  // namespace

double purity(const std::vector<int64_t>& clusters, const std::vector<int64_t>& truth) {
  const Eigen::MatrixXd table = contingency(clusters, truth);
  const double n = table.sum();
  if (n == 0) return 0;
  return table.rowwise().maxCoeff().sum() / n;
}

double normalized_mutual_information(const std::vector<int64_t>& clusters,
                                     const std::vector<int64_t>& truth) {
  const Eigen::MatrixXd table = contingency(clusters, truth);
  const double n = table.sum();
  if (n == 0) return 0;
  const Eigen::VectorXd pc = table.rowwise().sum(), pg = table.colwise().sum().transpose();
  const double hc = entropy(pc, n), hg = entropy(pg, n);
  if (hc == 0 && hg == 0) return 1.0;  // one cluster, one group: they agree
  if (hc == 0 || hg == 0) return 0.0;
  double mi = 0;
  for (Eigen::Index c = 0; c < table.rows(); ++c) {
    for (Eigen::Index g = 0; g < table.cols(); ++g) {
      const double count = table(c, g);
      if (count > 0) mi += (count / n) * std::log(count * n / (pc(c) * pg(g)));
    }
  }
  return mi / std::sqrt(hc * hg);
}

}  // namespace concord::rlhf
