// Learning a mixture of reward models with EM (MaxMin-RLHF, "Learning Rewards with EM
// Algorithm"). Users u = 1..U belong to K unknown sub-populations, each with its own
// Bradley-Terry reward r_k. With L[u, k] = sum over u's pairs of log sigmoid(r_k(y_c) - r_k(y_r)),
//
//   E-step (hard, the paper's and its public code's):  z_u = argmax_k L[u, k]
//   E-step (soft):  gamma[u, k] = pi_k exp(L[u, k]) / sum_j pi_j exp(L[u, j]),  pi_k = mean_u gamma[u, k]
//                   (in log space, log-sum-exp)
//   M-step: each r_k is trained on its users' pairs (hard), or on every pair weighted by
//           gamma[u, k] (soft), warm-started from the previous iteration.
//
// A whole user moves between clusters, never a single pair: a user's preferences are one draw
// of one population's reward. The objective EM climbs is the classification log-likelihood
// sum_u L[u, z_u] (hard) or the mixture log-likelihood sum_u log sum_k pi_k exp(L[u, k]) (soft).
//
// Beyond the paper: three initialisations (random, the public code's round-robin, and k-means++
// over per-user preference features), restarts that keep the best likelihood, a stopping rule
// (no user changes cluster, or the log-likelihood per pair moves less than a tolerance), the
// re-seeding of an emptied cluster with the user it explains worst, and held-out evaluation
// for the choice of K.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/data/preference.h"
#include "concord/rlhf/bradley_terry.h"
#include "concord/rlhf/reward_model.h"
#include "concord/train/trainer.h"

namespace concord::rlhf {

struct EmOptions {
  int64_t clusters = 2;                ///< K
  std::string assignment = "hard";     ///< hard | soft
  std::string init = "kmeans++";       ///< random | round_robin | kmeans++
  int64_t restarts = 1;                ///< EM runs from different seeds; the best is kept
  int64_t max_iterations = 10;
  /// Stop when the log-likelihood per pair changes by less than this (and, hard, when no user
  /// changes cluster).
  double tolerance = 1e-4;
  int64_t m_step_steps = 50;           ///< optimizer steps of each M-step
  int64_t batch_size = 16;             ///< pairs per M-step batch
  int64_t score_batch_size = 32;       ///< pairs per forward pass of the E-step
  uint64_t seed = 0;
};

/// The keys of a reward_em config's "em" section.
const OptionsSchema<EmOptions>& em_options_schema();

struct EmIteration {
  int64_t restart = 0;
  int64_t iteration = 0;               ///< 1-based
  double log_likelihood = 0;           ///< after this iteration's E-step
  double log_likelihood_per_pair = 0;
  int64_t changed = 0;                 ///< users whose cluster changed (hard)
  int64_t reseeded = 0;                ///< empty clusters re-seeded
  double m_step_loss = 0;              ///< the M-step's last training loss
  std::vector<int64_t> sizes;          ///< users per cluster
  nlohmann::json to_json() const;
};

struct EmResult {
  int64_t clusters = 0;
  /// Per user: its cluster (for soft, the most responsible one); -1 for a user with no pairs.
  std::vector<int64_t> assignment;
  Eigen::MatrixXd responsibilities;    ///< [U, K] (one-hot for hard)
  std::vector<double> mixture_weights; ///< pi_k
  double log_likelihood = 0;
  double log_likelihood_per_pair = 0;
  int64_t best_restart = 0;
  std::vector<EmIteration> history;    ///< every restart's iterations
  std::vector<double> cluster_accuracy;///< head k on the pairs of cluster k's users
  std::vector<int64_t> cluster_pairs;
  std::optional<double> purity, nmi;   ///< against the planted groups, when the data has them
  std::vector<int64_t> users_without_pairs;

  /// `users` names the users in the assignment.
  nlohmann::json to_json(const data::UserIndex& users) const;
  /// Everything, by index, exactly (a checkpoint's form); from_state reads it back and throws
  /// naming the missing or malformed field.
  nlohmann::json state() const;
  static EmResult from_state(const nlohmann::json& state);
};

/// Called after every E-step.
using EmCallback = std::function<void(const EmIteration&)>;

/// EM one iteration at a time, with its state between two iterations in the open, so a run can
/// be checkpointed after any iteration and resumed exactly (the `reward_em` task does).
///
///   RewardMixtureEm em(rewards, data, options, train);
///   while (!em.done()) em.iterate();     // checkpoint state() + the weights here
///   EmResult fit = em.finish();
///
/// To resume: build the reward models as the interrupted run built them (the same initial
/// weights), construct, then restore(state) and load the saved weights into `rewards` and,
/// where best_restart_weights() is set, into it. Everything else an iteration uses is a
/// function of this state (the M-step's optimiser is new each iteration, its sampler seeded from
/// the restart and iteration), so the resumed run ends bit-for-bit where an unbroken one ends on
/// CPU, once the CPU RNG is restored too.
class RewardMixtureEm {
 public:
  /// `rewards` (options.clusters heads) and `data` must outlive this object; `rewards`' weights
  /// now are what every restart starts from.
  RewardMixtureEm(RewardSet& rewards, const data::PreferenceDataset& data, EmOptions options,
                  train::TrainerOptions train, BradleyTerryOptions loss = {});

  /// Whether every restart has finished.
  bool done() const { return restart_ >= options_.restarts; }
  /// One iteration: the M-step then the E-step (starting the next restart first when the last
  /// one finished). Returns its record.
  const EmIteration& iterate();
  /// After done(): the best restart's weights back in `rewards`, its assignment and report.
  EmResult finish();

  /// The state between two iterations (JSON; doubles round-trip exactly).
  nlohmann::json state() const;
  /// Continues from a state() of a run on the same data and options. A state that does not fit
  /// (another K, user count or options) throws naming the field.
  void restore(const nlohmann::json& state);
  /// The weights of the best finished restart so far: kept when options.restarts > 1 (null
  /// otherwise); a checkpoint saves them beside `rewards`.
  RewardSet* best_restart_weights() { return best_weights_ ? &*best_weights_ : nullptr; }

 private:
  void begin_restart();
  void end_restart();

  RewardSet& rewards_;
  const data::PreferenceDataset& data_;
  EmOptions options_;
  train::TrainerOptions train_;
  BradleyTerryOptions loss_;
  RewardSet initial_;
  std::optional<RewardSet> best_weights_;
  // Per pair and per user indices of `data`.
  std::vector<int64_t> pair_user_;
  std::vector<double> pair_margin_;
  std::vector<int64_t> pairs_of_;
  int64_t users_ = 0;

  int64_t restart_ = 0;          ///< the restart under way (or next)
  int64_t iteration_ = 0;        ///< iterations done in it; 0: not begun
  std::vector<int64_t> assign_;  ///< per user, -1: no pairs
  Eigen::MatrixXd gamma_;        ///< [U, K] responsibilities (one-hot for hard)
  Eigen::VectorXd log_pi_;       ///< log mixture weights (soft)
  double ll_ = 0;                ///< the previous iteration's objective (-inf before the first)
  EmResult best_;                ///< the best finished restart's assignment and likelihood
  std::vector<EmIteration> history_;
};

/// Fits K = options.clusters reward functions (`rewards`, of that size) to `data` by EM and
/// leaves the best restart's weights in `rewards`. `train` gives the M-step's optimiser
/// settings (its max_steps is replaced by options.m_step_steps; no checkpoints are written).
EmResult fit_reward_mixture(RewardSet& rewards, const data::PreferenceDataset& data,
                            const EmOptions& options, const train::TrainerOptions& train,
                            const BradleyTerryOptions& loss = {}, const EmCallback& callback = {});

/// Per user, the planted group of its pairs (-1: none or no pairs).
std::vector<int64_t> planted_user_groups(const data::PreferenceDataset& data);

/// The initial assignment of users to clusters (EmOptions::init). Users without pairs get -1.
/// kmeans++ clusters per-user features: the mean over the user's pairs of
/// h(y_c) - h(y_r) (the first reward model's final hidden state at the last token, as the
/// reward head reads it) and of the length difference, each feature standardised.
std::vector<int64_t> initial_assignment(RewardSet& rewards, const data::PreferenceDataset& data,
                                        const EmOptions& options, uint64_t seed);

struct HeldOutFit {
  int64_t pairs = 0;
  double log_likelihood_per_pair = 0;  ///< each pair under its user's cluster (soft: mixture)
  double accuracy = 0;                 ///< the user's cluster's head ranks chosen first
  nlohmann::json to_json() const;
};

/// How well a fitted mixture explains held-out pairs of the same users (`data` numbered by the
/// same UserIndex as the fit's).
HeldOutFit evaluate_mixture(RewardSet& rewards, const data::PreferenceDataset& data,
                            const EmResult& fit, int64_t batch_size = 32);

}  // namespace concord::rlhf
