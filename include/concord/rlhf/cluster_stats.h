// Host-side statistics of MaxMin-RLHF's mixture of reward models, outside autograd, in Eigen:
// the per-user log-likelihood table of the E-step and its normalisation, k-means++ over per-user
// preference features (a data-driven initialisation of EM), and the agreement of a clustering
// with planted groups (purity, normalised mutual information).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Dense>

namespace concord::rlhf {

/// log sigmoid(x), stable for any x (never log(exp(x) / (1 + exp(x)))).
double log_sigmoid(double x);

/// The E-step's table L[u, k] = sum over user u's pairs p of log sigmoid(d[p, k] - margin[p]),
/// with d[p, k] = r_k(chosen_p) - r_k(rejected_p) ([P, K]) and user[p] in [0, U) (-1: skipped).
Eigen::MatrixXd user_log_likelihood(const Eigen::MatrixXd& d, const std::vector<int64_t>& user,
                                    const std::vector<double>& margin, int64_t num_users);

/// Soft E-step: responsibilities gamma[u, k] = pi_k exp(L[u, k]) / sum_j pi_j exp(L[u, j]),
/// computed in log space (log-sum-exp); rows of `active` false stay 0. Returns the mixture
/// log-likelihood sum_u log sum_k pi_k exp(L[u, k]) over the active users.
double soft_assign(const Eigen::MatrixXd& L, const Eigen::VectorXd& log_pi,
                   const std::vector<bool>& active, Eigen::MatrixXd& gamma);

/// k-means++ seeding (Arthur & Vassilvitskii 2007) then Lloyd's iterations on the rows of `x`
/// ([N, D]); returns a cluster per row. An emptied cluster takes the point farthest from its
/// centre. k <= N.
std::vector<int64_t> kmeans_pp(const Eigen::MatrixXd& x, int64_t k, std::mt19937_64& rng,
                               int64_t iterations = 50);

/// Purity of `clusters` against `truth` (both per item; items with truth < 0 are left out):
/// (1/N) sum_k max_g |cluster k and group g|.
double purity(const std::vector<int64_t>& clusters, const std::vector<int64_t>& truth);

/// Normalised mutual information I(C; G) / sqrt(H(C) H(G)) (1 when either has one class and
/// they agree, 0 when one of them is constant and the other is not).
double normalized_mutual_information(const std::vector<int64_t>& clusters,
                                     const std::vector<int64_t>& truth);

}  // namespace concord::rlhf
