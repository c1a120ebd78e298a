// CausalLmTumluModel against independent computations on a tiny random-weight Llama with the
// byte tokenizer: loglik with the prefix cache vs a plain full forward of prompt + continuation,
// batched left-padded generate vs lm::generate one prompt at a time, and the driver end to end.
#include "concord/eval/tumlu_lm_adapter.h"

#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "concord/core/runtime.h"
#include "concord/eval/tumlu_report.h"
#include "concord/lm/generate.h"
#include "concord/lm/model_config.h"
#include "eval_test_util.h"
#include "test_support.h"

namespace concord::eval {
namespace {

namespace fs = std::filesystem;

lm::CausalLM tiny_model() {
  // configs/models/tiny-llama.json (vocabulary 257: the bytes and <|endoftext|>), with room for
  // five-shot byte prompts.
  lm::ModelConfig config = lm::load_model_config(::concord::testing::source_dir() / "configs/models/tiny-llama.json");
  config.max_position_embeddings = 4096;
  at::manual_seed(7);
  lm::CausalLM model(config);
  model->eval();
  return model;
}

std::shared_ptr<const text::Tokenizer> bytes() { return text::load_tokenizer("bytes"); }

// log p(c | x) from one forward pass over x + c, without cache or padding.
double full_forward_loglik(lm::CausalLM model, const std::vector<int64_t>& prefix,
                           const std::vector<int64_t>& cont) {
  c10::InferenceMode guard;
  std::vector<int64_t> all = prefix;
  all.insert(all.end(), cont.begin(), cont.end());
  const at::Tensor ids = at::tensor(all, at::TensorOptions().dtype(at::kLong)).view({1, -1});
  const at::Tensor lp = at::log_softmax(model->forward(ids).to(at::kDouble), -1)[0];
  double sum = 0.0;
  for (size_t t = 0; t < cont.size(); ++t) {
    sum += lp[static_cast<int64_t>(prefix.size() + t - 1)][cont[t]].item<double>();
  }
  return sum;
}

const std::string kShots =
    "Sual: Q100 Biology\nA) right-100\nB) wrong-100-0\n\nCavab: A\n\n"
    "Sual: Q101 Biology\nA) wrong-101-0\nB) right-101\n\nCavab: B\n\n";

std::string item_prompt(int i) {
  return kShots + "Sual: Q" + std::to_string(i) + " Biology\nA) alma\nB) armud\nC) heyva\nD) nar\n\nCavab:";
}

TEST(CausalLmTumluModel, PrefixCacheMatchesAFullForward) {
  auto model = tiny_model();
  CausalLmTumluModel adapter(model, bytes());
  // Letters (one byte-token after the space: " A" is two tokens here) and option texts (several).
  const std::vector<std::string> letters = {" A", " B", " C", " D"};
  const std::vector<std::string> texts = {" alma", " armud", " heyva", " nar yemişi"};
  for (int i = 0; i < 4; ++i) {
    const std::string prompt = item_prompt(i);
    for (const auto* conts : {&letters, &texts}) {
      const auto got = adapter.loglik(prompt, *conts);
      ASSERT_EQ(got.size(), conts->size());
      const auto prefix_ids = adapter.prompt_tokens(prompt);
      for (size_t k = 0; k < conts->size(); ++k) {
        const auto cont = adapter.continuation_tokens(prefix_ids, prompt, (*conts)[k]);
        EXPECT_EQ(cont.size(), (*conts)[k].size());  // bytes: one token per byte
        EXPECT_NEAR(got[k], full_forward_loglik(model, prefix_ids, cont), 1e-4)
            << "item " << i << " continuation '" << (*conts)[k] << "'";
      }
    }
  }
  // Item 0's two calls have no other prompt to share with; item 1's first call builds the
  // shots' cache once (cut after the blank line that ends them) and every later call reuses it.
  EXPECT_EQ(adapter.stats().builds, 1);
  EXPECT_EQ(adapter.stats().full_forwards, 2);
  EXPECT_EQ(adapter.stats().hits, 6);
  EXPECT_EQ(adapter.stats().prefix_tokens, static_cast<int64_t>(kShots.size()) + 1);  // + BOS

  // Without the cache: the same numbers by lm::score_continuations.
  CausalLmTumluOptions plain;
  plain.prefix_cache = false;
  CausalLmTumluModel uncached(model, bytes(), plain);
  CausalLmTumluModel cached(model, bytes());
  for (int i = 0; i < 3; ++i) {
    const auto a = uncached.loglik(item_prompt(i), texts);
    const auto b = cached.loglik(item_prompt(i), texts);
    for (size_t k = 0; k < texts.size(); ++k) EXPECT_NEAR(a[k], b[k], 1e-4);
  }
  EXPECT_EQ(uncached.stats().hits, 0);
  EXPECT_EQ(cached.stats().hits, 2);
}

TEST(CausalLmTumluModel, BatchedLoglikMatchesAFullForward) {
  auto model = tiny_model();
  CausalLmTumluOptions ao;
  ao.item_batch_size = 3;  // 5 items: one batch of 3 and one of 2
  CausalLmTumluModel adapter(model, bytes(), ao);
  // Items of different lengths (the short ones are padded in their batch), 2 to 4 options, letters
  // and option texts of different token counts.
  std::vector<TumluModel::LoglikRequest> requests;
  for (int i = 0; i < 5; ++i) {
    const std::string question = "Q" + std::to_string(i) + std::string(static_cast<size_t>(7 * i), 'x');
    const int options = 2 + i % 3;
    std::string prompt = kShots + "Sual: " + question + "\n";
    TumluModel::LoglikRequest r;
    for (int k = 0; k < options; ++k) {
      prompt += answer_letter(k) + ") opt" + std::to_string(k) + "\n";
      r.continuations.push_back(i % 2 == 0 ? " " + answer_letter(k)
                                           : " opt" + std::string(static_cast<size_t>(k + 1), 'y'));
    }
    r.prefix = prompt + "\nCavab:";
    requests.push_back(r);
  }
  const auto got = adapter.loglik_batch(requests);
  ASSERT_EQ(got.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto ids = adapter.prompt_tokens(requests[i].prefix);
    ASSERT_EQ(got[i].size(), requests[i].continuations.size());
    for (size_t k = 0; k < got[i].size(); ++k) {
      const auto cont = adapter.continuation_tokens(ids, requests[i].prefix, requests[i].continuations[k]);
      EXPECT_NEAR(got[i][k], full_forward_loglik(model, ids, cont), 1e-4) << "item " << i << " option " << k;
    }
  }
  // The first call has no history: the shared text comes from the requests themselves.
  EXPECT_EQ(adapter.stats().builds, 1);
  EXPECT_EQ(adapter.stats().hits, 5);
  EXPECT_EQ(adapter.stats().full_forwards, 0);
  EXPECT_EQ(adapter.stats().prefix_tokens, static_cast<int64_t>(kShots.size()) + 1);  // + BOS

  // The default TumluModel::loglik_batch (one loglik call per request) gives the same numbers.
  CausalLmTumluModel one_by_one(model, bytes());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto alone = one_by_one.loglik(requests[i].prefix, requests[i].continuations);
    for (size_t k = 0; k < alone.size(); ++k) EXPECT_NEAR(alone[k], got[i][k], 1e-4);
  }
}

TEST(CausalLmTumluModel, NewSharedPrefixRebuildsTheCache) {
  auto model = tiny_model();
  CausalLmTumluModel adapter(model, bytes());
  const std::string other = "Soru: ilk\nA) x\n\nCevap: A\n\n";
  const std::vector<std::string> conts = {" A", " B"};
  adapter.loglik(item_prompt(0), conts);
  adapter.loglik(item_prompt(1), conts);
  const auto p = other + "Soru: Q5\nA) x\nB) y\n\nCevap:";
  adapter.loglik(p, conts);                      // nothing shared with the Biology shots
  const auto q = other + "Soru: Q6\nA) x\nB) y\n\nCevap:";
  const auto got = adapter.loglik(q, conts);     // builds the new shots' cache
  EXPECT_EQ(adapter.stats().builds, 2);
  EXPECT_EQ(adapter.stats().full_forwards, 2);
  const auto ids = adapter.prompt_tokens(q);
  for (size_t k = 0; k < conts.size(); ++k) {
    EXPECT_NEAR(got[k], full_forward_loglik(model, ids, adapter.continuation_tokens(ids, q, conts[k])), 1e-4);
  }
}

TEST(CausalLmTumluModel, BatchedGenerateEqualsOnePromptAtATime) {
  auto model = tiny_model();
  auto tok = bytes();
  CausalLmTumluModel adapter(model, tok);
  const std::vector<std::string> prompts = {"Sual: Q1\n\nCavab:", "Soru: uzun bir soru metni\n\nCevap:",
                                            "Сұрақ: Q3\n\nЖауап:"};
  // References: lm::generate on each prompt alone (no padding), greedy.
  lm::GenerationOptions g;
  g.max_new_tokens = 12;
  std::vector<std::string> alone;
  for (const auto& p : prompts) {
    const auto ids = tok->encode(p, true);
    alone.push_back(lm::generate(model, {std::vector<int64_t>(ids.begin(), ids.end())}, g, tok.get())[0].text);
  }
  EXPECT_EQ(adapter.generate(prompts, {}, 12), alone);

  // A stop string taken from the first reference output cuts that row right before it.
  ASSERT_GE(alone[0].size(), 6u);
  const std::string stop = alone[0].substr(3, 2);
  const auto cut = adapter.generate(prompts, {stop}, 12);
  ASSERT_EQ(cut.size(), prompts.size());
  EXPECT_EQ(cut[0], alone[0].substr(0, alone[0].find(stop)));
  for (size_t i = 1; i < prompts.size(); ++i) {
    const auto at = alone[i].find(stop);
    EXPECT_EQ(cut[i], at == std::string::npos ? alone[i] : alone[i].substr(0, at));
  }
}

TEST(CausalLmTumluModel, DriverRunsEndToEndOnSyntheticData) {
  testing::TempDir tmp;
  const fs::path data_dir = tmp.path() / "data";
  test::write_synthetic_subject(data_dir, "azerbaijani", "Biology", 5);
  test::write_synthetic_subject(data_dir, "azerbaijani", "Chemistry", 4);
  const TumluData data = load_tumlu(data_dir);
  auto model = tiny_model();

  CausalLmTumluOptions ao;
  ao.name = "tiny/llama";
  CausalLmTumluModel adapter(model, bytes(), ao);
  TumluEvalOptions options;
  options.protocol = "loglik";
  const auto out = tmp.path() / "out";
  const auto result = run_tumlu_eval(adapter, data, out, options);
  EXPECT_EQ(result.subjects_run, 2);
  ASSERT_EQ(result.outcomes.size(), 2u);
  // One shared-prefix build per subject; the driver sends a subject's items together, so every
  // item, the first too, is a cache hit.
  EXPECT_EQ(adapter.stats().builds, 2);
  EXPECT_EQ(adapter.stats().hits, 5 + 4);
  EXPECT_EQ(adapter.stats().full_forwards, 0);

  // The stored log-likelihoods are the model's, recomputed here by a full forward.
  const fs::path file = out / "azerbaijani/outputs/loglik/tiny/llama/Biology.json";
  ASSERT_TRUE(fs::exists(file));
  std::ifstream in(file);
  const auto records = nlohmann::json::parse(in);
  ASSERT_EQ(records.size(), 5u);
  for (const auto& r : records) {
    std::string prefix = r["system"].get<std::string>() + r["input"].get<std::string>();
    ASSERT_EQ(prefix.back(), ' ');
    prefix.pop_back();
    const auto ids = adapter.prompt_tokens(prefix);
    const auto& ll = r["loglik"];
    ASSERT_EQ(ll.size(), r["choices"].size());
    for (size_t k = 0; k < ll.size(); ++k) {
      const std::string cont = " " + answer_letter(static_cast<int>(k));
      EXPECT_NEAR(ll[k].get<double>(),
                  full_forward_loglik(model, ids, adapter.continuation_tokens(ids, prefix, cont)), 1e-4);
    }
  }

  // The generative protocol through the same adapter: greedy outputs stored, report written.
  TumluEvalOptions gen = options;
  gen.protocol = "generative";
  gen.max_new_tokens = 4;
  const auto gen_result = run_tumlu_eval(adapter, data, out, gen);
  EXPECT_EQ(gen_result.subjects_run, 2);
  EXPECT_TRUE(fs::exists(out / "azerbaijani/outputs/generative/tiny/llama/Chemistry.json"));
  const auto scores = score_model("loglik", adapter.name(), result.outcomes, {});
  write_tumlu_report(out, {scores}, {}, options.extractor);
  EXPECT_TRUE(fs::exists(out / "results.json"));
  EXPECT_TRUE(fs::exists(out / "report.md"));
}

}  // namespace
}  // namespace concord::eval
