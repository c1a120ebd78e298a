#include "concord/rlhf/em.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/rlhf/cluster_stats.h"
#include "concord/train/batch.h"

namespace concord::rlhf {

const OptionsSchema<EmOptions>& em_options_schema() {
  static const OptionsSchema<EmOptions> schema = [] {
    OptionsSchema<EmOptions> s("em");
    s.field("clusters", &EmOptions::clusters, "K: reward models in the mixture", opt::at_least(1))
        .field("assignment", &EmOptions::assignment,
               "hard: each user to its most likely cluster (the paper); soft: responsibilities",
               opt::one_of({"hard", "soft"}))
        .field("init", &EmOptions::init,
               "initial assignment: random, round_robin (the public code's) or kmeans++ over "
               "per-user preference features",
               opt::one_of({"random", "round_robin", "kmeans++"}))
        .field("restarts", &EmOptions::restarts, "EM runs from different seeds; the best is kept",
               opt::at_least(1))
        .field("max_iterations", &EmOptions::max_iterations, "EM iterations at most",
               opt::at_least(1))
        .field("tolerance", &EmOptions::tolerance,
               "stop when the log-likelihood per pair moves less than this", opt::at_least(0))
        .field("m_step_steps", &EmOptions::m_step_steps, "optimizer steps of each M-step",
               opt::at_least(1))
        .field("batch_size", &EmOptions::batch_size, "pairs per M-step batch", opt::at_least(1))
        .field("score_batch_size", &EmOptions::score_batch_size,
               "pairs per forward pass of the E-step", opt::at_least(1))
        .field("seed", &EmOptions::seed, "seed of the initialisation and the M-step's sampling");
    return s;
  }();
  return schema;
}

nlohmann::json EmIteration::to_json() const {
  return {{"restart", restart},
          {"iteration", iteration},
          {"log_likelihood", log_likelihood},
          {"log_likelihood_per_pair", log_likelihood_per_pair},
          {"changed", changed},
          {"reseeded", reseeded},
          {"m_step_loss", m_step_loss},
          {"sizes", sizes}};
}

nlohmann::json HeldOutFit::to_json() const {
  return {{"pairs", pairs}, {"log_likelihood_per_pair", log_likelihood_per_pair},
          {"accuracy", accuracy}};
}

nlohmann::json EmResult::to_json(const data::UserIndex& users) const {
  nlohmann::json assign = nlohmann::json::object();
  for (size_t u = 0; u < assignment.size(); ++u) {
    const std::string name = static_cast<int64_t>(u) < users.size() ? users.names()[u]
                                                                     : std::to_string(u);
    assign[name] = assignment[u];
  }
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : history) hist.push_back(h.to_json());
  nlohmann::json j = {{"clusters", clusters},
                      {"assignment", assign},
                      {"mixture_weights", mixture_weights},
                      {"log_likelihood", log_likelihood},
                      {"log_likelihood_per_pair", log_likelihood_per_pair},
                      {"best_restart", best_restart},
                      {"history", hist},
                      {"cluster_accuracy", cluster_accuracy},
                      {"cluster_pairs", cluster_pairs},
                      {"users_without_pairs", users_without_pairs}};
  if (purity) j["purity"] = *purity;
  if (nmi) j["nmi"] = *nmi;
  return j;
}

namespace {

struct PairIndex {
  std::vector<int64_t> user;       // per pair
  std::vector<double> margin;      // per pair
  std::vector<int64_t> pairs_of;   // per user: number of pairs
  int64_t users = 0;
};

PairIndex index_pairs(const data::PreferenceDataset& data) {
  PairIndex ix;
  ix.users = data.users().size();
  ix.pairs_of.assign(static_cast<size_t>(ix.users), 0);
  for (const auto& p : data.pairs()) {
    ix.user.push_back(p.user_index);
    ix.margin.push_back(p.margin);
    ++ix.pairs_of[static_cast<size_t>(p.user_index)];
  }
  return ix;
}

Eigen::MatrixXd to_eigen(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kDouble).contiguous().cpu();
  Eigen::MatrixXd m(c.size(0), c.size(1));
  auto a = c.accessor<double, 2>();
  for (int64_t i = 0; i < c.size(0); ++i) {
    for (int64_t j = 0; j < c.size(1); ++j) m(i, j) = a[i][j];
  }
  return m;
}

void check_finite(const Eigen::MatrixXd& d, int64_t iteration) {
  for (Eigen::Index k = 0; k < d.cols(); ++k) {
    if (!d.col(k).allFinite()) {
      fail("reward_em: reward model ", k, " produced a non-finite reward at EM iteration ",
           iteration, " (diverged M-step? lower the learning rate)");
    }
  }
}

// Moves into each empty cluster the user its current cluster explains worst (lowest
// log-likelihood per pair), taken from a cluster that keeps at least one user.
int64_t reseed_empty(std::vector<int64_t>& assign, const Eigen::MatrixXd& L,
                     const PairIndex& ix, int64_t k) {
  int64_t reseeded = 0;
  for (int64_t c = 0; c < k; ++c) {
    std::vector<int64_t> sizes(static_cast<size_t>(k), 0);
    for (int64_t a : assign) {
      if (a >= 0) ++sizes[static_cast<size_t>(a)];
    }
    if (sizes[static_cast<size_t>(c)] > 0) continue;
    int64_t worst = -1;
    double worst_fit = std::numeric_limits<double>::infinity();
    for (size_t u = 0; u < assign.size(); ++u) {
      const int64_t a = assign[u];
      if (a < 0 || sizes[static_cast<size_t>(a)] < 2) continue;
      const double fit = L(static_cast<Eigen::Index>(u), a) / static_cast<double>(ix.pairs_of[u]);
      if (fit < worst_fit) {
        worst_fit = fit;
        worst = static_cast<int64_t>(u);
      }
    }
    if (worst < 0) continue;  // fewer users than clusters
    assign[static_cast<size_t>(worst)] = c;
    ++reseeded;
  }
  return reseeded;
}

std::vector<int64_t> sizes_of(const std::vector<int64_t>& assign, int64_t k) {
  std::vector<int64_t> sizes(static_cast<size_t>(k), 0);
  for (int64_t a : assign) {
    if (a >= 0) ++sizes[static_cast<size_t>(a)];
  }
  return sizes;
}

// One M-step: a fresh optimiser over the (warm) reward models for m_step_steps steps.
double m_step(RewardSet& rewards, const data::PreferenceDataset& data, const PairIndex& ix,
              const EmOptions& o, const train::TrainerOptions& train_options,
              const BradleyTerryOptions& loss, const std::vector<int64_t>& assign,
              const Eigen::MatrixXd* gamma, uint64_t seed) {
  train::TrainerOptions t = train_options;
  t.max_steps = o.m_step_steps;
  t.progress = false;
  t.eval_every = 0;
  t.checkpoint_every = 0;
  train::Trainer trainer(rewards.named_modules(), t);
  BradleyTerryObjective objective(rewards, loss);
  train::TrainResult result;
  if (gamma == nullptr) {
    objective.set_user_heads(at::tensor(assign, at::kLong));
    std::vector<int64_t> cluster_of_pair;
    for (int64_t u : ix.user) cluster_of_pair.push_back(assign[static_cast<size_t>(u)]);
    ClusterBalancedPairs source(data, cluster_of_pair, o.batch_size, seed);
    result = trainer.fit(objective, source);
  } else {
    at::Tensor g = at::empty({gamma->rows(), gamma->cols()}, at::kFloat);
    for (Eigen::Index u = 0; u < gamma->rows(); ++u) {
      for (Eigen::Index k = 0; k < gamma->cols(); ++k) g[u][k] = static_cast<float>((*gamma)(u, k));
    }
    objective.set_user_weights(g);
    data::SamplerOptions so;
    so.batch_size = o.batch_size;
    so.seed = seed;
    train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> source(data, so);
    result = trainer.fit(objective, source);
  }
  rewards.train(false);
  return result.final_loss;
}

}  // namespace

std::vector<int64_t> planted_user_groups(const data::PreferenceDataset& data) {
  std::vector<int64_t> group(static_cast<size_t>(data.users().size()), -1);
  for (const auto& p : data.pairs()) {
    if (p.group_index >= 0) group[static_cast<size_t>(p.user_index)] = p.group_index;
  }
  return group;
}

std::vector<int64_t> initial_assignment(RewardSet& rewards, const data::PreferenceDataset& data,
                                        const EmOptions& o, uint64_t seed) {
  const PairIndex ix = index_pairs(data);
  std::vector<int64_t> active;
  for (int64_t u = 0; u < ix.users; ++u) {
    if (ix.pairs_of[static_cast<size_t>(u)] > 0) active.push_back(u);
  }
  std::vector<int64_t> assign(static_cast<size_t>(ix.users), -1);
  std::mt19937_64 rng(seed);
  const int64_t k = o.clusters;
  if (o.init == "round_robin") {
    for (size_t i = 0; i < active.size(); ++i) {
      assign[static_cast<size_t>(active[i])] = static_cast<int64_t>(i) % k;
    }
    return assign;
  }
  if (o.init == "random" || static_cast<int64_t>(active.size()) < k) {
    // A random permutation dealt round-robin: random, yet no cluster starts empty.
    std::vector<int64_t> order = active;
    std::shuffle(order.begin(), order.end(), rng);
    for (size_t i = 0; i < order.size(); ++i) {
      assign[static_cast<size_t>(order[i])] = static_cast<int64_t>(i) % k;
    }
    return assign;
  }
  // kmeans++: per-user mean of h(y_c) - h(y_r) and of the length difference.
  RewardModel& model = rewards.models()[0];
  const bool was_training = model->is_training();
  model->eval();
  const c10::Device device = model->score.device();
  const int64_t d = model->backbone->config.hidden_size;
  Eigen::MatrixXd feats = Eigen::MatrixXd::Zero(ix.users, d + 1);
  {
    c10::InferenceMode guard;
    for (int64_t start = 0; start < data.size(); start += o.score_batch_size) {
      std::vector<int64_t> idx;
      for (int64_t i = start; i < std::min(data.size(), start + o.score_batch_size); ++i) idx.push_back(i);
      const data::PreferenceBatch b = data.get_batch(idx);
      auto [ids, mask] = stack_pairs(b, data.pad_id());
      const at::Tensor h = model->last_hidden(ids.to(device), mask.to(device)).to(at::kDouble).cpu();
      const int64_t n = static_cast<int64_t>(idx.size());
      const Eigen::MatrixXd diff = to_eigen(h.narrow(0, 0, n) - h.narrow(0, n, n));
      for (int64_t i = 0; i < n; ++i) {
        const auto& p = data.pairs()[static_cast<size_t>(idx[static_cast<size_t>(i)])];
        feats.row(p.user_index).head(d) += diff.row(i);
        feats(p.user_index, d) += static_cast<double>(p.chosen.size()) - static_cast<double>(p.rejected.size());
      }
    }
  }
  model->train(was_training);
  Eigen::MatrixXd x(static_cast<Eigen::Index>(active.size()), d + 1);
  for (size_t i = 0; i < active.size(); ++i) {
    x.row(static_cast<Eigen::Index>(i)) =
        feats.row(active[i]) / static_cast<double>(ix.pairs_of[static_cast<size_t>(active[i])]);
  }
  // Standardise each feature so that the length difference weighs like a hidden dimension.
  const Eigen::RowVectorXd mean = x.colwise().mean();
  x = x.rowwise() - mean;
  const Eigen::RowVectorXd sd = (x.array().square().colwise().sum() / std::max<double>(1, x.rows())).sqrt();
  for (Eigen::Index j = 0; j < x.cols(); ++j) {
    if (sd(j) > 0) x.col(j) /= sd(j);
  }
  const std::vector<int64_t> clusters = kmeans_pp(x, k, rng);
  for (size_t i = 0; i < active.size(); ++i) assign[static_cast<size_t>(active[i])] = clusters[i];
  return assign;
}

EmResult fit_reward_mixture(RewardSet& rewards, const data::PreferenceDataset& data,
                            const EmOptions& o, const train::TrainerOptions& train,
                            const BradleyTerryOptions& loss, const EmCallback& callback) {
  em_options_schema().validate(o, "reward_em options");
  CONCORD_CHECK(rewards.size() == o.clusters, "reward_em: ", o.clusters, " clusters but ",
                rewards.size(), " reward heads");
  CONCORD_CHECK(data.size() > 0, "reward_em: no preference pairs");
  const PairIndex ix = index_pairs(data);
  const int64_t k = o.clusters;
  const bool soft = o.assignment == "soft";
  std::vector<bool> active(static_cast<size_t>(ix.users));
  for (int64_t u = 0; u < ix.users; ++u) active[static_cast<size_t>(u)] = ix.pairs_of[static_cast<size_t>(u)] > 0;

  const RewardSet initial = rewards.clone();
  std::optional<RewardSet> best_weights;
  EmResult best;
  best.log_likelihood = -std::numeric_limits<double>::infinity();
  std::vector<EmIteration> history;

  for (int64_t restart = 0; restart < o.restarts; ++restart) {
    if (restart > 0) rewards.copy_weights_from(initial);
    const uint64_t seed = o.seed + 1000003ULL * static_cast<uint64_t>(restart);
    std::vector<int64_t> assign = initial_assignment(rewards, data, o, seed);
    Eigen::MatrixXd gamma = Eigen::MatrixXd::Zero(ix.users, k);
    for (int64_t u = 0; u < ix.users; ++u) {
      if (assign[static_cast<size_t>(u)] >= 0) gamma(u, assign[static_cast<size_t>(u)]) = 1;
    }
    Eigen::VectorXd log_pi = Eigen::VectorXd::Constant(k, -std::log(static_cast<double>(k)));
    double ll = -std::numeric_limits<double>::infinity();
    Eigen::MatrixXd L;
    for (int64_t it = 1; it <= o.max_iterations; ++it) {
      EmIteration rec;
      rec.restart = restart;
      rec.iteration = it;
      rec.m_step_loss = m_step(rewards, data, ix, o, train, loss, assign, soft ? &gamma : nullptr,
                               seed + static_cast<uint64_t>(it));
      const Eigen::MatrixXd d = to_eigen(pair_reward_differences(rewards, data, o.score_batch_size));
      check_finite(d, it);
      L = user_log_likelihood(d, ix.user, ix.margin, ix.users);
      std::vector<int64_t> next(static_cast<size_t>(ix.users), -1);
      double new_ll = 0;
      if (soft) {
        new_ll = soft_assign(L, log_pi, active, gamma);
        for (int64_t u = 0; u < ix.users; ++u) {
          if (active[static_cast<size_t>(u)]) gamma.row(u).maxCoeff(&next[static_cast<size_t>(u)]);
        }
      } else {
        for (int64_t u = 0; u < ix.users; ++u) {
          if (!active[static_cast<size_t>(u)]) continue;
          Eigen::Index z = 0;
          new_ll += L.row(u).maxCoeff(&z);
          next[static_cast<size_t>(u)] = z;
        }
      }
      if (!soft) {
        rec.reseeded = reseed_empty(next, L, ix, k);
        if (rec.reseeded > 0) {
          new_ll = 0;
          for (int64_t u = 0; u < ix.users; ++u) {
            if (next[static_cast<size_t>(u)] >= 0) new_ll += L(u, next[static_cast<size_t>(u)]);
          }
        }
        gamma.setZero();
        for (int64_t u = 0; u < ix.users; ++u) {
          if (next[static_cast<size_t>(u)] >= 0) gamma(u, next[static_cast<size_t>(u)]) = 1;
        }
      } else {
        // A cluster holding less than half a user's worth of responsibility is re-seeded with
        // the user the mixture explains worst.
        const Eigen::VectorXd mass = gamma.colwise().sum();
        for (int64_t c = 0; c < k; ++c) {
          if (mass(c) >= 0.5) continue;
          int64_t worst = -1;
          double worst_fit = std::numeric_limits<double>::infinity();
          for (int64_t u = 0; u < ix.users; ++u) {
            if (!active[static_cast<size_t>(u)]) continue;
            const double fit = L.row(u).maxCoeff() / static_cast<double>(ix.pairs_of[static_cast<size_t>(u)]);
            if (fit < worst_fit) {
              worst_fit = fit;
              worst = u;
            }
          }
          if (worst < 0) continue;
          gamma.row(worst).setZero();
          gamma(worst, c) = 1;
          next[static_cast<size_t>(worst)] = c;
          ++rec.reseeded;
        }
        const Eigen::VectorXd pi = gamma.colwise().sum() / gamma.sum();
        for (int64_t c = 0; c < k; ++c) log_pi(c) = std::log(std::max(pi(c), 1e-12));
      }
      for (int64_t u = 0; u < ix.users; ++u) {
        if (next[static_cast<size_t>(u)] != assign[static_cast<size_t>(u)]) ++rec.changed;
      }
      assign = next;
      rec.log_likelihood = new_ll;
      rec.log_likelihood_per_pair = new_ll / static_cast<double>(data.size());
      rec.sizes = sizes_of(assign, k);
      history.push_back(rec);
      if (callback) callback(rec);
      const bool converged =
          std::abs(new_ll - ll) / static_cast<double>(data.size()) < o.tolerance ||
          (!soft && rec.changed == 0 && rec.reseeded == 0);
      ll = new_ll;
      if (converged) break;
    }
    if (ll > best.log_likelihood) {
      best.log_likelihood = ll;
      best.best_restart = restart;
      best.assignment = assign;
      best.responsibilities = gamma;
      best.mixture_weights.assign(static_cast<size_t>(k), 0.0);
      const Eigen::VectorXd pi = gamma.colwise().sum() / std::max(1e-12, gamma.sum());
      for (int64_t c = 0; c < k; ++c) best.mixture_weights[static_cast<size_t>(c)] = pi(c);
      if (o.restarts > 1) best_weights = rewards.clone();
    }
  }
  if (best_weights && best.best_restart != o.restarts - 1) rewards.copy_weights_from(*best_weights);
  best.clusters = k;
  best.history = std::move(history);
  best.log_likelihood_per_pair = best.log_likelihood / static_cast<double>(data.size());
  for (int64_t u = 0; u < ix.users; ++u) {
    if (!active[static_cast<size_t>(u)]) best.users_without_pairs.push_back(u);
  }
  // Per-cluster accuracy of its own head on its users' pairs.
  const Eigen::MatrixXd d = to_eigen(pair_reward_differences(rewards, data, o.score_batch_size));
  best.cluster_accuracy.assign(static_cast<size_t>(k), 0.0);
  best.cluster_pairs.assign(static_cast<size_t>(k), 0);
  for (Eigen::Index p = 0; p < d.rows(); ++p) {
    const int64_t c = best.assignment[static_cast<size_t>(ix.user[static_cast<size_t>(p)])];
    if (c < 0) continue;
    best.cluster_pairs[static_cast<size_t>(c)] += 1;
    if (d(p, c) > 0) best.cluster_accuracy[static_cast<size_t>(c)] += 1;
  }
  for (int64_t c = 0; c < k; ++c) {
    if (best.cluster_pairs[static_cast<size_t>(c)] > 0) {
      best.cluster_accuracy[static_cast<size_t>(c)] /= static_cast<double>(best.cluster_pairs[static_cast<size_t>(c)]);
    }
  }
  const std::vector<int64_t> truth = planted_user_groups(data);
  if (std::any_of(truth.begin(), truth.end(), [](int64_t g) { return g >= 0; })) {
    best.purity = purity(best.assignment, truth);
    best.nmi = normalized_mutual_information(best.assignment, truth);
  }
  return best;
}

HeldOutFit evaluate_mixture(RewardSet& rewards, const data::PreferenceDataset& data,
                            const EmResult& fit, int64_t batch_size) {
  HeldOutFit out;
  if (data.size() == 0) return out;
  const Eigen::MatrixXd d = to_eigen(pair_reward_differences(rewards, data, batch_size));
  const int64_t k = fit.clusters;
  Eigen::VectorXd log_pi(k);
  for (int64_t c = 0; c < k; ++c) log_pi(c) = std::log(std::max(fit.mixture_weights[static_cast<size_t>(c)], 1e-12));
  double ll = 0, correct = 0;
  for (Eigen::Index p = 0; p < d.rows(); ++p) {
    const auto& pair = data.pairs()[static_cast<size_t>(p)];
    const auto u = static_cast<size_t>(pair.user_index);
    const int64_t c = u < fit.assignment.size() ? fit.assignment[u] : -1;
    if (c < 0) continue;  // a user the fit never saw a pair of
    ++out.pairs;
    // The pair's likelihood under its user's responsibilities (one-hot for hard).
    Eigen::RowVectorXd a(k);
    for (int64_t j = 0; j < k; ++j) {
      const double g = fit.responsibilities(static_cast<Eigen::Index>(u), j);
      a(j) = (g > 0 ? std::log(g) : -std::numeric_limits<double>::infinity()) +
             log_sigmoid(d(p, j) - pair.margin);
    }
    const double m = a.maxCoeff();
    ll += m + std::log((a.array() - m).exp().sum());
    if (d(p, c) > 0) correct += 1;
  }
  if (out.pairs > 0) {
    out.log_likelihood_per_pair = ll / static_cast<double>(out.pairs);
    out.accuracy = correct / static_cast<double>(out.pairs);
  }
  return out;
}

}  // namespace concord::rlhf
