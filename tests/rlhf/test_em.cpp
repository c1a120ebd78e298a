// EM over users: the E-step's statistics (Eigen), the clustering metrics on known answers, and
// planted groups recovered from preferences alone.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include <torch/torch.h>

#include "concord/rlhf/cluster_stats.h"
#include "concord/rlhf/em.h"
#include "concord/rlhf/synthetic.h"
#include "test_support.h"

using namespace concord;

TEST(ClusterStats, PurityAndNmiOnKnownAnswers) {
  const std::vector<int64_t> truth{0, 0, 0, 1, 1, 1};
  EXPECT_DOUBLE_EQ(rlhf::purity({1, 1, 1, 0, 0, 0}, truth), 1.0);  // labels are arbitrary
  EXPECT_NEAR(rlhf::normalized_mutual_information({1, 1, 1, 0, 0, 0}, truth), 1.0, 1e-12);
  EXPECT_NEAR(rlhf::purity({0, 0, 1, 1, 1, 1}, truth), 5.0 / 6.0, 1e-12);
  // Independent: each cluster holds half of each group.
  EXPECT_NEAR(rlhf::normalized_mutual_information({0, 1, 0, 1, 0, 1, 0, 1}, {0, 0, 1, 1, 0, 0, 1, 1}),
              0.0, 1e-12);
  // One cluster for two groups: no information.
  EXPECT_EQ(rlhf::normalized_mutual_information({0, 0, 0, 0}, {0, 0, 1, 1}), 0.0);
  // Items without a group are left out.
  EXPECT_DOUBLE_EQ(rlhf::purity({0, 1, 1}, {0, -1, 1}), 1.0);
  // Ids need not be small: they are relabelled, not used as indices.
  EXPECT_DOUBLE_EQ(rlhf::purity({7, 2000000000}, {1000000000, 3}), 1.0);
  EXPECT_DOUBLE_EQ(rlhf::normalized_mutual_information({7, 2000000000}, {1000000000, 3}), 1.0);
  // By hand: clusters {0,0,1,1,2,2} against groups {0,0,0,1,1,1} share I = (2/3) ln 2, with
  // H(C) = ln 3 and H(G) = ln 2 (sklearn's normalized_mutual_info_score with
  // average_method="geometric").
  EXPECT_NEAR(rlhf::normalized_mutual_information({0, 0, 1, 1, 2, 2}, {0, 0, 0, 1, 1, 1}),
              (2.0 / 3.0) * std::log(2.0) / std::sqrt(std::log(3.0) * std::log(2.0)), 1e-12);
}

TEST(ClusterStats, KmeansPlusPlusFindsSeparatedBlobs) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0.0, 0.1);
  Eigen::MatrixXd x(60, 2);
  std::vector<int64_t> truth;
  const double centres[3][2] = {{0, 0}, {5, 5}, {-5, 5}};
  for (int i = 0; i < 60; ++i) {
    x(i, 0) = centres[i % 3][0] + noise(rng);
    x(i, 1) = centres[i % 3][1] + noise(rng);
    truth.push_back(i % 3);
  }
  std::mt19937_64 seed(0);
  const auto clusters = rlhf::kmeans_pp(x, 3, seed);
  EXPECT_DOUBLE_EQ(rlhf::purity(clusters, truth), 1.0);
  EXPECT_NEAR(rlhf::normalized_mutual_information(clusters, truth), 1.0, 1e-12);
}

TEST(ClusterStats, EStepTableAndSoftAssignmentStayFiniteFarFromZero) {
  // Two users, two heads; user 0's pairs fit head 0, user 1's head 1, by hundreds of nats.
  Eigen::MatrixXd d(4, 2);
  d << 300, -300, 250, -250, -400, 400, -10, 10;
  const std::vector<int64_t> user{0, 0, 1, 1};
  const Eigen::MatrixXd L = rlhf::user_log_likelihood(d, user, {0, 0, 0, 0}, 2);
  EXPECT_NEAR(L(0, 1), -550.0, 1e-9);  // log sigmoid(-x) ~ -x for large x
  EXPECT_NEAR(L(1, 0), -410.0 + rlhf::log_sigmoid(-10.0) + 10.0, 1e-9);
  Eigen::MatrixXd gamma;
  const Eigen::VectorXd log_pi = Eigen::VectorXd::Constant(2, std::log(0.5));
  const double ll = rlhf::soft_assign(L, log_pi, {true, true}, gamma);
  EXPECT_TRUE(std::isfinite(ll));
  EXPECT_NEAR(gamma(0, 0), 1.0, 1e-12);
  EXPECT_NEAR(gamma(1, 1), 1.0, 1e-12);
  EXPECT_NEAR(gamma.row(0).sum(), 1.0, 1e-12);
  // Close likelihoods: responsibilities are the softmax of L + log pi.
  Eigen::MatrixXd L2(1, 2);
  L2 << -1.0, -2.0;
  rlhf::soft_assign(L2, log_pi, {true}, gamma);
  EXPECT_NEAR(gamma(0, 0), 1.0 / (1.0 + std::exp(-1.0)), 1e-12);
}

namespace {

struct World {
  rlhf::TwoGroupWorldOptions options;
  lm::CausalLM reference{nullptr};
  data::PreferenceDataset data;
};

World small_world(int64_t majority, int64_t minority, uint64_t seed) {
  World w;
  w.options.majority_users = majority;
  w.options.minority_users = minority;
  w.options.pairs_per_user = 20;
  w.options.seed = seed;
  torch::manual_seed(static_cast<uint64_t>(seed));
  w.reference = lm::CausalLM(rlhf::world_model_config(w.options, 16));
  rlhf::train_reference_policy(w.reference, w.options, 60, 1e-2, seed);
  w.data = rlhf::sample_preferences(w.reference, w.options, seed);
  return w;
}

train::TrainerOptions m_step_options() {
  train::TrainerOptions t;
  t.optimizer.lr = 3e-3;
  t.optimizer.weight_decay = 0;
  t.lr_schedule = "constant";
  return t;
}

}  // namespace

TEST(RewardEm, RecoversPlantedGroups) {
  World w = small_world(8, 4, 5);
  for (const std::string assignment : {"hard", "soft"}) {
    SCOPED_TRACE(assignment);
    torch::manual_seed(7);
    rlhf::RewardModel model(rlhf::world_model_config(w.options, 16), 2);
    auto rewards = rlhf::RewardSet::shared(model);
    rlhf::EmOptions o;
    o.clusters = 2;
    o.assignment = assignment;
    o.init = "kmeans++";
    o.max_iterations = 6;
    o.m_step_steps = 40;
    const rlhf::EmResult r = rlhf::fit_reward_mixture(rewards, w.data, o, m_step_options());
    ASSERT_TRUE(r.purity.has_value());
    EXPECT_DOUBLE_EQ(*r.purity, 1.0) << r.to_json(w.data.users()).dump();
    EXPECT_GT(*r.nmi, 0.99);
    // Each cluster's own head fits its users' pairs.
    for (double acc : r.cluster_accuracy) EXPECT_GT(acc, 0.7);
    // It stopped because it converged: no user moved (hard), or the likelihood settled.
    if (assignment == "hard") {
      EXPECT_EQ(r.history.back().changed, 0);
    }
    EXPECT_GE(r.history.back().log_likelihood, r.history.front().log_likelihood - 1e-9);
  }
}

TEST(RewardEm, EmptyClustersAreReseededAndUsersWithoutPairsReported) {
  World w = small_world(6, 3, 11);
  // A user named in the index with no pair at all.
  data::UserIndex users = w.data.users();
  users.add("silent");
  data::UserIndex groups = w.data.groups();
  auto pairs = w.data.pairs();
  auto data = data::PreferenceDataset::from_pairs(pairs, users, groups, 0);
  torch::manual_seed(3);
  rlhf::RewardModel a(rlhf::world_model_config(w.options, 16), 1);
  rlhf::RewardModel b(rlhf::world_model_config(w.options, 16), 1);
  rlhf::RewardModel c(rlhf::world_model_config(w.options, 16), 1);
  auto rewards = rlhf::RewardSet::separate({a, b, c});
  rlhf::EmOptions o;
  o.clusters = 3;
  o.init = "kmeans++";
  o.restarts = 2;
  o.max_iterations = 3;
  o.m_step_steps = 20;
  const rlhf::EmResult r = rlhf::fit_reward_mixture(rewards, data, o, m_step_options());
  for (int64_t size : r.history.back().sizes) EXPECT_GT(size, 0);
  ASSERT_EQ(r.users_without_pairs.size(), 1u);
  EXPECT_EQ(users.names()[static_cast<size_t>(r.users_without_pairs[0])], "silent");
  EXPECT_EQ(r.assignment[static_cast<size_t>(r.users_without_pairs[0])], -1);
  EXPECT_GE(r.best_restart, 0);
  EXPECT_LT(r.best_restart, 2);
  const auto held = rlhf::evaluate_mixture(rewards, data, r);
  EXPECT_EQ(held.pairs, data.size());
  EXPECT_LT(held.log_likelihood_per_pair, 0.0);
}

// A reward model whose rewards are NaN (a diverged M-step; here its head is NaN from the start,
// and the trainer skips its non-finite steps) stops EM with an error naming the model and the
// iteration, instead of assignments drawn from NaN likelihoods.
TEST(RewardEm, NonFiniteRewardsStopWithTheModelNamed) {
  World w;
  w.options.majority_users = 2;
  w.options.minority_users = 1;
  w.options.pairs_per_user = 4;
  torch::manual_seed(2);
  w.reference = lm::CausalLM(rlhf::world_model_config(w.options, 16));
  w.data = rlhf::sample_preferences(w.reference, w.options, 0);
  rlhf::RewardModel a(rlhf::world_model_config(w.options, 16), 1);
  rlhf::RewardModel b(rlhf::world_model_config(w.options, 16), 1);
  {
    torch::NoGradGuard no_grad;
    b->score.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  auto rewards = rlhf::RewardSet::separate({a, b});
  rlhf::EmOptions o;
  o.clusters = 2;
  o.init = "round_robin";  // reads no reward before the first M-step
  o.max_iterations = 2;
  o.m_step_steps = 2;  // under the trainer's 3 skipped steps in a row
  try {
    rlhf::fit_reward_mixture(rewards, w.data, o, m_step_options());
    FAIL() << "EM ran on NaN rewards";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("reward model 1 produced a non-finite reward at EM "
                                         "iteration"),
              std::string::npos)
        << e.what();
  }
}

TEST(RewardEm, BadOptionsNameTheKey) {
  World w;
  w.options.majority_users = 2;
  w.options.minority_users = 1;
  w.options.pairs_per_user = 2;
  w.reference = lm::CausalLM(rlhf::world_model_config(w.options, 16));
  w.data = rlhf::sample_preferences(w.reference, w.options, 0);
  rlhf::RewardModel model(rlhf::world_model_config(w.options, 16), 2);
  auto rewards = rlhf::RewardSet::shared(model);
  rlhf::EmOptions o;
  o.init = "spectral";
  try {
    rlhf::fit_reward_mixture(rewards, w.data, o, m_step_options());
    FAIL() << "an unknown init was accepted";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("init"), std::string::npos) << e.what();
  }
}

namespace {

// Every tensor of every reward model, equal bit for bit.
void expect_same_weights(const rlhf::RewardSet& a, const rlhf::RewardSet& b) {
  const auto ma = a.named_modules(), mb = b.named_modules();
  ASSERT_EQ(ma.size(), mb.size());
  for (size_t m = 0; m < ma.size(); ++m) {
    const auto pa = ma[m].second->named_parameters(), pb = mb[m].second->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_TRUE(torch::equal(pa[i].value(), pb[i].value())) << ma[m].first << "." << pa[i].key();
    }
  }
}

// Soft EM that never stops early: every restart runs all its iterations.
rlhf::EmOptions every_iteration(int64_t restarts, int64_t m_step_steps) {
  rlhf::EmOptions o;
  o.clusters = 2;
  o.assignment = "soft";
  o.restarts = restarts;
  o.max_iterations = 3;
  o.tolerance = 0;
  o.m_step_steps = m_step_steps;
  return o;
}

// Two heads on one backbone, the same initial weights every call.
rlhf::RewardSet seeded_mixture(const World& w) {
  torch::manual_seed(21);
  return rlhf::RewardSet::shared(rlhf::RewardModel(rlhf::world_model_config(w.options, 16), 2));
}

}  // namespace

// Stopped after any iteration (inside a restart, or where one ends) and continued from state()
// and the weights in new objects, EM ends bit-for-bit where the unbroken fit ends.
TEST(RewardEm, ContinuesExactlyFromItsStateAfterAnyIteration) {
  World w = small_world(4, 2, 13);
  const rlhf::EmOptions o = every_iteration(2, 5);  // 6 iterations in all
  const auto fresh = [&] { return seeded_mixture(w); };
  rlhf::RewardSet whole = fresh();
  const rlhf::EmResult expected = rlhf::fit_reward_mixture(whole, w.data, o, m_step_options());
  ASSERT_EQ(expected.history.size(), 6u);
  for (int stop_after : {2, 3, 5}) {
    SCOPED_TRACE("stopped after iteration " + std::to_string(stop_after));
    rlhf::RewardSet first = fresh();
    rlhf::RewardMixtureEm em(first, w.data, o, m_step_options());
    for (int i = 0; i < stop_after; ++i) em.iterate();
    // Through text, as a checkpoint keeps it.
    const auto state = nlohmann::json::parse(em.state().dump());
    const rlhf::RewardSet saved = first.clone();
    const rlhf::RewardSet saved_best = em.best_restart_weights()->clone();

    rlhf::RewardSet second = fresh();
    rlhf::RewardMixtureEm resumed(second, w.data, o, m_step_options());
    resumed.restore(state);
    second.copy_weights_from(saved);
    resumed.best_restart_weights()->copy_weights_from(saved_best);
    while (!resumed.done()) resumed.iterate();
    const rlhf::EmResult got = resumed.finish();
    expect_same_weights(second, whole);
    EXPECT_EQ(got.state().dump(), expected.state().dump());
  }
}

TEST(RewardEm, AStateOfAnotherRunIsRefusedNamingTheField) {
  World w = small_world(4, 2, 13);
  auto rewards = seeded_mixture(w);
  rlhf::RewardMixtureEm em(rewards, w.data, every_iteration(1, 2), m_step_options());
  em.iterate();
  const nlohmann::json good = em.state();
  const auto refused = [&](nlohmann::json state, const std::string& field) {
    try {
      em.restore(state);
      ADD_FAILURE() << "accepted: " << state.dump();
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  auto s = good;
  s["clusters"] = 3;
  refused(s, "clusters");
  s = good;
  s["assignment"][0] = 7;
  refused(s, "assignment");
  s = good;
  s["responsibilities"].erase(0);
  refused(s, "responsibilities");
  s = good;
  s.erase("history");
  refused(s, "history");
  s = good;
  s["iteration"] = 99;
  refused(s, "iteration");
  // A refused state changed nothing: the good one still continues.
  em.restore(good);
  EXPECT_NO_THROW(em.iterate());
}
