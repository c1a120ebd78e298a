#include "concord/rlhf/em.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include <c10/core/InferenceMode.h>

#include "concord/core/error.h"
#include "concord/core/shard.h"
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
                     const std::vector<int64_t>& pairs_of, int64_t k) {
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
      const double fit = L(static_cast<Eigen::Index>(u), a) / static_cast<double>(pairs_of[u]);
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
double m_step(RewardSet& rewards, const data::PreferenceDataset& data,
              const std::vector<int64_t>& pair_user,
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
    for (int64_t u : pair_user) cluster_of_pair.push_back(assign[static_cast<size_t>(u)]);
    const Shard shard = process_shard();
    ClusterBalancedPairs source(data, cluster_of_pair, o.batch_size, seed, shard.rank,
                                shard.world_size);
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
    train::SampledBatches<data::PreferenceDataset, data::PreferenceBatch> source(
        data, so.for_this_process());
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
      at::Tensor h;
      if (auto shared = shared_prefix_layout(b, data.pad_id())) {
        h = model->pair_last_hidden(*shared);
      } else {
        auto [ids, mask] = stack_pairs(b, data.pad_id());
        h = model->last_hidden(ids.to(device), mask.to(device));
      }
      h = h.to(at::kDouble).cpu();
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

namespace {

// Doubles in a state: numbers (nlohmann writes the shortest text that reads back to the same
// double), and the one non-finite value EM keeps, -inf before a first likelihood, as a string.
nlohmann::json exact(double v) {
  if (std::isfinite(v)) return v;
  return v < 0 ? "-inf" : "inf";
}

double exact_double(const nlohmann::json& j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    throw FormatError("'" + s + "' is not a number");
  }
  return j.get<double>();
}

nlohmann::json matrix_state(const Eigen::MatrixXd& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (Eigen::Index j = 0; j < m.cols(); ++j) row.push_back(exact(m(i, j)));
    rows.push_back(std::move(row));
  }
  return rows;
}

Eigen::MatrixXd matrix_from(const nlohmann::json& j, Eigen::Index rows, Eigen::Index cols,
                            const char* name) {
  if (!j.is_array() || static_cast<Eigen::Index>(j.size()) != rows) {
    throw FormatError(std::string("'") + name + "' must have " + std::to_string(rows) + " rows");
  }
  Eigen::MatrixXd m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    const auto& row = j[static_cast<size_t>(i)];
    if (!row.is_array() || static_cast<Eigen::Index>(row.size()) != cols) {
      throw FormatError(std::string("'") + name + "' row " + std::to_string(i) + " must have " +
                        std::to_string(cols) + " values");
    }
    for (Eigen::Index c = 0; c < cols; ++c) m(i, c) = exact_double(row[static_cast<size_t>(c)]);
  }
  return m;
}

nlohmann::json iteration_state(const EmIteration& it) {
  nlohmann::json j = it.to_json();
  j["log_likelihood"] = exact(it.log_likelihood);
  j["log_likelihood_per_pair"] = exact(it.log_likelihood_per_pair);
  j["m_step_loss"] = exact(it.m_step_loss);
  return j;
}

EmIteration iteration_from(const nlohmann::json& j) {
  EmIteration it;
  it.restart = j.at("restart").get<int64_t>();
  it.iteration = j.at("iteration").get<int64_t>();
  it.log_likelihood = exact_double(j.at("log_likelihood"));
  it.log_likelihood_per_pair = exact_double(j.at("log_likelihood_per_pair"));
  it.changed = j.at("changed").get<int64_t>();
  it.reseeded = j.at("reseeded").get<int64_t>();
  it.m_step_loss = exact_double(j.at("m_step_loss"));
  it.sizes = j.at("sizes").get<std::vector<int64_t>>();
  return it;
}

// Runs `read`, turning a missing key or a value of the wrong type into a FormatError that says
// which state it was.
template <typename F>
auto reading_state(const char* what, F&& read) {
  try {
    return read();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(std::string(what) + ": " + e.what());
  } catch (const FormatError& e) {
    throw FormatError(std::string(what) + ": " + e.what());
  }
}

}  // namespace

nlohmann::json EmResult::state() const {
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : history) hist.push_back(iteration_state(h));
  nlohmann::json mixture = nlohmann::json::array(), accuracy = nlohmann::json::array();
  for (double w : mixture_weights) mixture.push_back(exact(w));
  for (double a : cluster_accuracy) accuracy.push_back(exact(a));
  nlohmann::json j = {{"clusters", clusters},
                      {"assignment", assignment},
                      {"responsibilities", matrix_state(responsibilities)},
                      {"mixture_weights", mixture},
                      {"log_likelihood", exact(log_likelihood)},
                      {"log_likelihood_per_pair", exact(log_likelihood_per_pair)},
                      {"best_restart", best_restart},
                      {"history", hist},
                      {"cluster_accuracy", accuracy},
                      {"cluster_pairs", cluster_pairs},
                      {"users_without_pairs", users_without_pairs}};
  if (purity) j["purity"] = exact(*purity);
  if (nmi) j["nmi"] = exact(*nmi);
  return j;
}

EmResult EmResult::from_state(const nlohmann::json& j) {
  return reading_state("EM result", [&] {
    EmResult r;
    r.clusters = j.at("clusters").get<int64_t>();
    r.assignment = j.at("assignment").get<std::vector<int64_t>>();
    if (r.clusters < 1) throw FormatError("'clusters' must be at least 1");
    for (int64_t a : r.assignment) {
      if (a < -1 || a >= r.clusters) throw FormatError("'assignment' names cluster " + std::to_string(a));
    }
    r.responsibilities = matrix_from(j.at("responsibilities"),
                                     static_cast<Eigen::Index>(r.assignment.size()), r.clusters,
                                     "responsibilities");
    for (const auto& w : j.at("mixture_weights")) r.mixture_weights.push_back(exact_double(w));
    r.log_likelihood = exact_double(j.at("log_likelihood"));
    r.log_likelihood_per_pair = exact_double(j.at("log_likelihood_per_pair"));
    r.best_restart = j.at("best_restart").get<int64_t>();
    for (const auto& h : j.at("history")) r.history.push_back(iteration_from(h));
    for (const auto& a : j.at("cluster_accuracy")) r.cluster_accuracy.push_back(exact_double(a));
    r.cluster_pairs = j.at("cluster_pairs").get<std::vector<int64_t>>();
    r.users_without_pairs = j.at("users_without_pairs").get<std::vector<int64_t>>();
    if (static_cast<int64_t>(r.mixture_weights.size()) != r.clusters ||
        static_cast<int64_t>(r.cluster_accuracy.size()) != r.clusters ||
        static_cast<int64_t>(r.cluster_pairs.size()) != r.clusters) {
      throw FormatError("per-cluster lists must have " + std::to_string(r.clusters) + " entries");
    }
    if (j.contains("purity")) r.purity = exact_double(j["purity"]);
    if (j.contains("nmi")) r.nmi = exact_double(j["nmi"]);
    return r;
  });
}

RewardMixtureEm::RewardMixtureEm(RewardSet& rewards, const data::PreferenceDataset& data,
                                 EmOptions options, train::TrainerOptions train,
                                 BradleyTerryOptions loss)
    : rewards_(rewards), data_(data), options_(std::move(options)), train_(std::move(train)),
      loss_(loss) {
  em_options_schema().validate(options_, "reward_em options");
  CONCORD_CHECK(rewards.size() == options_.clusters, "reward_em: ", options_.clusters,
                " clusters but ", rewards.size(), " reward heads");
  CONCORD_CHECK(data.size() > 0, "reward_em: no preference pairs");
  const PairIndex ix = index_pairs(data);
  pair_user_ = ix.user;
  pair_margin_ = ix.margin;
  pairs_of_ = ix.pairs_of;
  users_ = ix.users;
  initial_ = rewards.clone();
  if (options_.restarts > 1) best_weights_ = rewards.clone();
  best_.log_likelihood = -std::numeric_limits<double>::infinity();
}

void RewardMixtureEm::begin_restart() {
  if (restart_ > 0) rewards_.copy_weights_from(initial_);
  const uint64_t seed = options_.seed + 1000003ULL * static_cast<uint64_t>(restart_);
  assign_ = initial_assignment(rewards_, data_, options_, seed);
  gamma_ = Eigen::MatrixXd::Zero(users_, options_.clusters);
  for (int64_t u = 0; u < users_; ++u) {
    if (assign_[static_cast<size_t>(u)] >= 0) gamma_(u, assign_[static_cast<size_t>(u)]) = 1;
  }
  log_pi_ = Eigen::VectorXd::Constant(options_.clusters,
                                      -std::log(static_cast<double>(options_.clusters)));
  ll_ = -std::numeric_limits<double>::infinity();
}

void RewardMixtureEm::end_restart() {
  const int64_t k = options_.clusters;
  if (ll_ > best_.log_likelihood) {
    best_.log_likelihood = ll_;
    best_.best_restart = restart_;
    best_.assignment = assign_;
    best_.responsibilities = gamma_;
    best_.mixture_weights.assign(static_cast<size_t>(k), 0.0);
    const Eigen::VectorXd pi = gamma_.colwise().sum() / std::max(1e-12, gamma_.sum());
    for (int64_t c = 0; c < k; ++c) best_.mixture_weights[static_cast<size_t>(c)] = pi(c);
    if (best_weights_) best_weights_->copy_weights_from(rewards_);
  }
  ++restart_;
  iteration_ = 0;
}

const EmIteration& RewardMixtureEm::iterate() {
  CONCORD_CHECK(!done(), "reward_em: iterate() after the last restart finished");
  if (iteration_ == 0) begin_restart();
  const int64_t k = options_.clusters;
  const bool soft = options_.assignment == "soft";
  const auto n = static_cast<double>(data_.size());
  const uint64_t seed = options_.seed + 1000003ULL * static_cast<uint64_t>(restart_);
  ++iteration_;
  EmIteration rec;
  rec.restart = restart_;
  rec.iteration = iteration_;
  rec.m_step_loss = m_step(rewards_, data_, pair_user_, options_, train_, loss_, assign_,
                           soft ? &gamma_ : nullptr, seed + static_cast<uint64_t>(iteration_));
  const Eigen::MatrixXd d = to_eigen(pair_reward_differences(rewards_, data_, options_.score_batch_size));
  check_finite(d, iteration_);
  const Eigen::MatrixXd L = user_log_likelihood(d, pair_user_, pair_margin_, users_);
  std::vector<bool> active(static_cast<size_t>(users_));
  for (int64_t u = 0; u < users_; ++u) active[static_cast<size_t>(u)] = pairs_of_[static_cast<size_t>(u)] > 0;
  std::vector<int64_t> next(static_cast<size_t>(users_), -1);
  double new_ll = 0;
  if (soft) {
    new_ll = soft_assign(L, log_pi_, active, gamma_);
    for (int64_t u = 0; u < users_; ++u) {
      if (active[static_cast<size_t>(u)]) gamma_.row(u).maxCoeff(&next[static_cast<size_t>(u)]);
    }
    // A cluster holding less than half a user's worth of responsibility is re-seeded with the
    // user the mixture explains worst.
    const Eigen::VectorXd mass = gamma_.colwise().sum();
    for (int64_t c = 0; c < k; ++c) {
      if (mass(c) >= 0.5) continue;
      int64_t worst = -1;
      double worst_fit = std::numeric_limits<double>::infinity();
      for (int64_t u = 0; u < users_; ++u) {
        if (!active[static_cast<size_t>(u)]) continue;
        const double fit = L.row(u).maxCoeff() / static_cast<double>(pairs_of_[static_cast<size_t>(u)]);
        if (fit < worst_fit) {
          worst_fit = fit;
          worst = u;
        }
      }
      if (worst < 0) continue;
      gamma_.row(worst).setZero();
      gamma_(worst, c) = 1;
      next[static_cast<size_t>(worst)] = c;
      ++rec.reseeded;
    }
    const Eigen::VectorXd pi = gamma_.colwise().sum() / gamma_.sum();
    for (int64_t c = 0; c < k; ++c) log_pi_(c) = std::log(std::max(pi(c), 1e-12));
  } else {
    for (int64_t u = 0; u < users_; ++u) {
      if (!active[static_cast<size_t>(u)]) continue;
      Eigen::Index z = 0;
      new_ll += L.row(u).maxCoeff(&z);
      next[static_cast<size_t>(u)] = z;
    }
    rec.reseeded = reseed_empty(next, L, pairs_of_, k);
    if (rec.reseeded > 0) {
      new_ll = 0;
      for (int64_t u = 0; u < users_; ++u) {
        if (next[static_cast<size_t>(u)] >= 0) new_ll += L(u, next[static_cast<size_t>(u)]);
      }
    }
    gamma_.setZero();
    for (int64_t u = 0; u < users_; ++u) {
      if (next[static_cast<size_t>(u)] >= 0) gamma_(u, next[static_cast<size_t>(u)]) = 1;
    }
  }
  for (int64_t u = 0; u < users_; ++u) {
    if (next[static_cast<size_t>(u)] != assign_[static_cast<size_t>(u)]) ++rec.changed;
  }
  assign_ = next;
  rec.log_likelihood = new_ll;
  rec.log_likelihood_per_pair = new_ll / n;
  rec.sizes = sizes_of(assign_, k);
  history_.push_back(rec);
  const bool converged = std::abs(new_ll - ll_) / n < options_.tolerance ||
                         (!soft && rec.changed == 0 && rec.reseeded == 0);
  ll_ = new_ll;
  if (converged || iteration_ == options_.max_iterations) end_restart();
  return history_.back();
}

EmResult RewardMixtureEm::finish() {
  CONCORD_CHECK(done(), "reward_em: finish() before the last restart finished");
  const int64_t k = options_.clusters;
  EmResult best = best_;
  if (best_weights_ && best.best_restart != options_.restarts - 1) {
    rewards_.copy_weights_from(*best_weights_);
  }
  best.clusters = k;
  best.history = history_;
  best.log_likelihood_per_pair = best.log_likelihood / static_cast<double>(data_.size());
  for (int64_t u = 0; u < users_; ++u) {
    if (pairs_of_[static_cast<size_t>(u)] == 0) best.users_without_pairs.push_back(u);
  }
  // Per-cluster accuracy of its own head on its users' pairs.
  const Eigen::MatrixXd d = to_eigen(pair_reward_differences(rewards_, data_, options_.score_batch_size));
  best.cluster_accuracy.assign(static_cast<size_t>(k), 0.0);
  best.cluster_pairs.assign(static_cast<size_t>(k), 0);
  for (Eigen::Index p = 0; p < d.rows(); ++p) {
    const int64_t c = best.assignment[static_cast<size_t>(pair_user_[static_cast<size_t>(p)])];
    if (c < 0) continue;
    best.cluster_pairs[static_cast<size_t>(c)] += 1;
    if (d(p, c) > 0) best.cluster_accuracy[static_cast<size_t>(c)] += 1;
  }
  for (int64_t c = 0; c < k; ++c) {
    if (best.cluster_pairs[static_cast<size_t>(c)] > 0) {
      best.cluster_accuracy[static_cast<size_t>(c)] /= static_cast<double>(best.cluster_pairs[static_cast<size_t>(c)]);
    }
  }
  const std::vector<int64_t> truth = planted_user_groups(data_);
  if (std::any_of(truth.begin(), truth.end(), [](int64_t g) { return g >= 0; })) {
    best.purity = purity(best.assignment, truth);
    best.nmi = normalized_mutual_information(best.assignment, truth);
  }
  return best;
}

nlohmann::json RewardMixtureEm::state() const {
  nlohmann::json hist = nlohmann::json::array();
  for (const auto& h : history_) hist.push_back(iteration_state(h));
  nlohmann::json log_pi = nlohmann::json::array();
  for (Eigen::Index c = 0; c < log_pi_.size(); ++c) log_pi.push_back(exact(log_pi_(c)));
  nlohmann::json best_mixture = nlohmann::json::array();
  for (double w : best_.mixture_weights) best_mixture.push_back(exact(w));
  return {{"clusters", options_.clusters},
          {"users", users_},
          {"pairs", data_.size()},
          {"restart", restart_},
          {"iteration", iteration_},
          {"assignment", assign_},
          {"responsibilities", matrix_state(gamma_)},
          {"log_pi", log_pi},
          {"log_likelihood", exact(ll_)},
          {"history", hist},
          {"best",
           {{"log_likelihood", exact(best_.log_likelihood)},
            {"restart", best_.best_restart},
            {"assignment", best_.assignment},
            {"responsibilities", matrix_state(best_.responsibilities)},
            {"mixture_weights", best_mixture}}}};
}

void RewardMixtureEm::restore(const nlohmann::json& j) {
  reading_state("reward_em state", [&] {
    const int64_t k = options_.clusters;
    const auto expect = [&](const char* key, int64_t want) {
      const int64_t got = j.at(key).get<int64_t>();
      if (got != want) {
        throw FormatError(std::string("'") + key + "' is " + std::to_string(got) + ", this run has " +
                          std::to_string(want) + " (resume with the same data and options)");
      }
    };
    expect("clusters", k);
    expect("users", users_);
    expect("pairs", data_.size());
    const int64_t restart = j.at("restart").get<int64_t>();
    const int64_t iteration = j.at("iteration").get<int64_t>();
    if (restart < 0 || restart > options_.restarts || iteration < 0 ||
        iteration >= options_.max_iterations) {
      throw FormatError("restart " + std::to_string(restart) + ", iteration " +
                        std::to_string(iteration) + " is outside these options' " +
                        std::to_string(options_.restarts) + " restarts of " +
                        std::to_string(options_.max_iterations) + " iterations");
    }
    auto assign = j.at("assignment").get<std::vector<int64_t>>();
    if (iteration > 0 && static_cast<int64_t>(assign.size()) != users_) {
      throw FormatError("'assignment' must have " + std::to_string(users_) + " users");
    }
    for (int64_t a : assign) {
      if (a < -1 || a >= k) throw FormatError("'assignment' names cluster " + std::to_string(a));
    }
    Eigen::MatrixXd gamma = iteration > 0 ? matrix_from(j.at("responsibilities"), users_, k, "responsibilities")
                                          : Eigen::MatrixXd();
    Eigen::VectorXd log_pi(k);
    const auto& lp = j.at("log_pi");
    if (iteration > 0 && static_cast<int64_t>(lp.size()) != k) {
      throw FormatError("'log_pi' must have " + std::to_string(k) + " values");
    }
    for (int64_t c = 0; c < k && iteration > 0; ++c) log_pi(c) = exact_double(lp[static_cast<size_t>(c)]);
    std::vector<EmIteration> history;
    for (const auto& h : j.at("history")) history.push_back(iteration_from(h));
    const auto& b = j.at("best");
    EmResult best;
    best.log_likelihood = exact_double(b.at("log_likelihood"));
    best.best_restart = b.at("restart").get<int64_t>();
    best.assignment = b.at("assignment").get<std::vector<int64_t>>();
    best.responsibilities = matrix_from(b.at("responsibilities"),
                                        static_cast<Eigen::Index>(best.assignment.size()),
                                        best.assignment.empty() ? 0 : k, "best.responsibilities");
    for (const auto& w : b.at("mixture_weights")) best.mixture_weights.push_back(exact_double(w));
    // Everything read: now change the state.
    restart_ = restart;
    iteration_ = iteration;
    assign_ = std::move(assign);
    gamma_ = std::move(gamma);
    log_pi_ = std::move(log_pi);
    ll_ = exact_double(j.at("log_likelihood"));
    history_ = std::move(history);
    best_ = std::move(best);
    return 0;
  });
}

EmResult fit_reward_mixture(RewardSet& rewards, const data::PreferenceDataset& data,
                            const EmOptions& o, const train::TrainerOptions& train,
                            const BradleyTerryOptions& loss, const EmCallback& callback) {
  RewardMixtureEm em(rewards, data, o, train, loss);
  while (!em.done()) {
    const EmIteration& it = em.iterate();
    if (callback) callback(it);
  }
  return em.finish();
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
