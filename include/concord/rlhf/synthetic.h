// A small, offline world with two groups of users whose preferences conflict, for the
// MaxMin-RLHF experiment in miniature, the quickstart and the tests (planted structure that EM
// must recover and PPO must trade off). Tokens: 0 pad, 1 bos, 2 eos, 3.. words. Responses are
// word sequences ended by eos. The two groups' ground-truth rewards:
//
//   majority  r_maj(y) = number of "planted" words in y (ids 3 .. 3 + planted_tokens - 1):
//             it likes responses rich in a token class, and so, incidentally, long ones
//   minority  r_min(y) = -length_cost * |y|: it likes concise responses
//
// Users are drawn majority : minority at majority_users : minority_users (10 : 1 by default, the
// paper's ratio); each labels pairs of responses the reference policy sampled for random
// prompts by Bradley-Terry on its group's reward, P(y1 > y2) = sigmoid(s (r(y1) - r(y2))).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/options.h"
#include "concord/data/preference.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/generate.h"

namespace concord::rlhf {

struct TwoGroupWorldOptions {
  int64_t vocab_size = 32;
  int64_t planted_tokens = 6;
  int64_t prompt_length = 4;
  int64_t max_response = 10;        ///< most words of a response (eos not counted)
  int64_t majority_users = 20;
  int64_t minority_users = 2;
  int64_t pairs_per_user = 24;
  double length_cost = 0.5;         ///< the minority's cost per word
  double preference_sharpness = 2.0;///< s of the Bradley-Terry labelling
  uint64_t seed = 0;
};

const OptionsSchema<TwoGroupWorldOptions>& two_group_world_options_schema();

inline constexpr int64_t kWorldPad = 0, kWorldBos = 1, kWorldEos = 2, kWorldFirstWord = 3;

/// The words of a response: its tokens up to (not including) the first eos or pad.
std::vector<int64_t> response_words(const std::vector<int64_t>& response);
double majority_reward(const std::vector<int64_t>& response, const TwoGroupWorldOptions& o);
double minority_reward(const std::vector<int64_t>& response, const TwoGroupWorldOptions& o);
/// group 0: majority, 1: minority.
double true_reward(int64_t group, const std::vector<int64_t>& response,
                   const TwoGroupWorldOptions& o);

/// The reference (SFT) policy's architecture: a 2-layer Llama-style model over the world's
/// vocabulary.
lm::ModelConfig world_model_config(const TwoGroupWorldOptions& o, int64_t hidden = 32);

/// Random prompts: bos then prompt_length words.
std::vector<std::vector<int64_t>> world_prompts(const TwoGroupWorldOptions& o, int64_t n,
                                                uint64_t seed);

/// Trains `model` by next-token loss on prompts followed by responses of uniformly random
/// length (1..max_response) and words, then eos: a reference policy whose samples vary in both
/// traits the groups care about. Returns the final loss.
double train_reference_policy(lm::CausalLM model, const TwoGroupWorldOptions& o, int64_t steps,
                              double lr, uint64_t seed);

/// Sampling options for the world: do_sample, temperature 1, max_response + 1 new tokens,
/// stop at eos.
lm::GenerationOptions world_generation(const TwoGroupWorldOptions& o, uint64_t seed);

/// Preference pairs labelled by each user's group; users "majority_00", ..., "minority_00",
/// ...; groups "majority", "minority" (group_index 0, 1).
data::PreferenceDataset sample_preferences(lm::CausalLM reference, const TwoGroupWorldOptions& o,
                                           uint64_t seed);

struct GroupScore {
  double mean_true_reward = 0;
  double win_rate = 0;  ///< P(true reward of the policy's response > the reference's), ties half
  nlohmann::json to_json() const;
};

/// The policy against the reference on `prompts`: `samples_per_prompt` responses of each per
/// prompt (the policy sampled with `seed`, the reference with seed + 1), the i-th of one against
/// the i-th of the other; per group ("majority", "minority").
std::map<std::string, GroupScore> evaluate_against_reference(
    lm::CausalLM policy, lm::CausalLM reference, const std::vector<std::vector<int64_t>>& prompts,
    const TwoGroupWorldOptions& o, uint64_t seed, int64_t samples_per_prompt = 4);

}  // namespace concord::rlhf
