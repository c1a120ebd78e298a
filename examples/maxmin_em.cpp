// Learn a mixture of reward models over users with EM, from C++ (MaxMin-RLHF).
//
//   build/examples/example_maxmin_em OUT_DIR
//
// What it shows: the two-group synthetic world of concord/rlhf/synthetic.h (a majority that
// likes planted words, a minority that likes short answers), a reference policy trained on it,
// users' Bradley-Terry labels of its samples, then rlhf::fit_reward_mixture with two reward
// models (one backbone, two heads), the planted groups recovered (purity, NMI), and the reward
// models saved as transformers GPT2/LlamaForSequenceClassification folders.
// ci: @OUT@
// ci-expect: purity 1
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/rlhf/em.h"
#include "concord/rlhf/synthetic.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: example_maxmin_em OUT_DIR\n";
    return 2;
  }
  try {
    concord::init_runtime();
    namespace rlhf = concord::rlhf;
    rlhf::TwoGroupWorldOptions world;
    world.majority_users = 8;
    world.minority_users = 4;
    world.pairs_per_user = 20;
    torch::manual_seed(5);
    concord::lm::CausalLM reference(rlhf::world_model_config(world, 16));
    rlhf::train_reference_policy(reference, world, 60, 1e-2, 5);
    const auto pairs = rlhf::sample_preferences(reference, world, 5);
    std::cout << pairs.size() << " labelled pairs from " << pairs.users().size() << " users\n";

    torch::manual_seed(7);
    auto rewards = rlhf::RewardSet::shared(rlhf::RewardModel(rlhf::world_model_config(world, 16), 2));
    rlhf::EmOptions em;
    em.clusters = 2;
    em.init = "kmeans++";
    em.max_iterations = 6;
    em.m_step_steps = 40;
    concord::train::TrainerOptions m_step;
    m_step.optimizer.lr = 3e-3;
    m_step.optimizer.weight_decay = 0;
    m_step.lr_schedule = "constant";
    const auto fit = rlhf::fit_reward_mixture(rewards, pairs, em, m_step, {},
                                              [](const rlhf::EmIteration& it) {
                                                std::cout << "EM iteration " << it.iteration
                                                          << ": log-likelihood/pair "
                                                          << it.log_likelihood_per_pair << ", "
                                                          << it.changed << " users moved\n";
                                              });
    std::cout << "purity " << *fit.purity << ", NMI " << *fit.nmi << "\n";
    rewards.save(argv[1]);
    std::cout << "reward models saved under " << argv[1] << "/reward\n";
    return *fit.purity == 1.0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "example_maxmin_em: " << concord::one_line_message(e) << "\n";
    return 1;
  }
}
