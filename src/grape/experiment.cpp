#include "concord/grape/experiment.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/data/pretrain.h"
#include "concord/data/records.h"
#include "concord/data/sft.h"
#include "concord/grape/score.h"
#include "concord/grape/select.h"
#include "concord/lm/generate.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/train/batch.h"
#include "concord/train/next_token.h"

namespace concord::grape {

namespace {

void say(const std::function<void(const std::string&)>& progress, const std::string& what) {
  if (progress) progress(what);
}

// A copy of `model` with its own parameters (SFT starts from the base weights every time).
lm::CausalLM copy_of(lm::CausalLM model) {
  auto clone = std::dynamic_pointer_cast<lm::CausalLMImpl>(model->clone());
  return lm::CausalLM(clone);
}

// SFT of a copy of `base` on prompt/completion records; returns the fine-tuned model.
lm::CausalLM fine_tune(lm::CausalLM base, const std::vector<data::SftRecord>& records,
                       const GrapeExperimentOptions& o, uint64_t seed) {
  const text::ByteTokenizer tokenizer;
  data::SftOptions so;
  so.chat_template = "plain";
  so.max_length = o.model.max_position_embeddings;
  const auto dataset = data::SftDataset::from_records(records, tokenizer, so);
  CONCORD_CHECK(dataset.size() > 0, "grape experiment: no SFT samples left after tokenisation");
  seed_everything(seed);
  lm::CausalLM model = copy_of(base);
  data::SamplerOptions sampling;
  sampling.batch_size = o.sft_batch_size;
  sampling.seed = seed;
  train::SampledBatches<data::SftDataset> batches(dataset, sampling);
  train::Trainer trainer({{"model", model.ptr()}}, o.sft);
  train::NextTokenObjective objective(model);
  trainer.fit(objective, batches);
  return model;
}

}  // namespace

nlohmann::json ModeResult::to_json() const {
  nlohmann::json j = accuracy.to_json();
  j["mode"] = mode;
  j["examples"] = examples;
  nlohmann::json tasks = nlohmann::json::object();
  for (const auto& [task, s] : task_accuracy) tasks[task] = s.to_json();
  j["task_accuracy"] = tasks;
  j["sources"] = sources;
  j["length_limited"] = length_limited;
  j["sample_outputs"] = sample_outputs;
  return j;
}

nlohmann::json GrapeExperimentResult::to_json() const {
  nlohmann::json m = nlohmann::json::array();
  for (const auto& r : modes) m.push_back(r.to_json());
  nlohmann::json cmp = nlohmann::json::array();
  for (const auto& c : comparisons) {
    const auto& d = c.grape_minus_mode;
    cmp.push_back({{"mode", c.mode}, {"grape_minus_mode", d.difference}, {"ci_low", d.ci_low},
                   {"ci_high", d.ci_high}, {"significant", d.significant},
                   {"paired", {{"ci_low", c.paired.ci_low}, {"ci_high", c.paired.ci_high},
                               {"significant", c.paired.significant}}}});
  }
  return {{"base_accuracy", base_accuracy},
          {"constant_answer_accuracy", constant_answer_accuracy},
          {"comparisons", cmp},
          {"base_accuracy_question_answer", base_accuracy_question_answer},
          {"base_task_accuracy", base_task_accuracy},
          {"base_length_limited", base_length_limited},
          {"max_new_tokens", max_new_tokens},
          {"base_pretrain_loss", base_pretrain_loss},
          {"single_source_accuracy", single_source_accuracy},
          {"best_source", best_source},
          {"grape_wins", grape_wins},
          {"modes", m}};
}

int64_t generation_budget(const SyntheticPool& pool) {
  size_t longest = 0;
  for (const auto& p : pool.train) {
    for (const auto& r : p.responses) longest = std::max(longest, r.text.size());
  }
  return static_cast<int64_t>(longest) + 8;
}

double heldout_accuracy(lm::CausalLM model, const std::vector<SyntheticItem>& items,
                        int64_t max_new_tokens, AnswerPrompt prompt,
                        std::vector<std::string>* texts, double* length_limited,
                        std::map<std::string, double>* task_accuracy) {
  CONCORD_CHECK(!items.empty(), "heldout_accuracy: no items");
  const text::ByteTokenizer tokenizer;
  std::vector<std::string> prompts;
  const bool native = prompt == AnswerPrompt::pretraining_text;
  for (const auto& item : items) {
    prompts.push_back(native ? item.instruction + " " : "Question: " + item.instruction + "\nAnswer:");
  }
  lm::GenerationOptions go;
  go.max_new_tokens = max_new_tokens;
  if (native) go.stop_strings = {"\n"};
  go.batch_size = 32;
  const bool was_training = model->is_training();
  model->eval();
  const auto outputs = lm::generate_text(model, tokenizer, prompts, go);
  if (was_training) model->train();
  int64_t correct = 0, limited = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_task;  // correct, items
  for (size_t i = 0; i < items.size(); ++i) {
    const bool right = verify_synthetic_answer(items[i], outputs[i].text);
    correct += right;
    by_task[items[i].task].first += right;
    by_task[items[i].task].second += 1;
    limited += outputs[i].finish_reason == "length";
    if (texts != nullptr) texts->push_back(outputs[i].text);
  }
  if (task_accuracy != nullptr) {
    for (const auto& [task, n] : by_task) {
      (*task_accuracy)[task] = 100.0 * static_cast<double>(n.first) / static_cast<double>(n.second);
    }
  }
  if (length_limited != nullptr) {
    *length_limited = static_cast<double>(limited) / static_cast<double>(items.size());
  }
  return 100.0 * static_cast<double>(correct) / static_cast<double>(items.size());
}

GrapeExperimentResult run_grape_experiment(const GrapeExperimentOptions& o,
                                           const std::function<void(const std::string&)>& progress) {
  CONCORD_CHECK(!o.seeds.empty() && !o.modes.empty(), "grape experiment: no seeds or no modes");
  GrapeExperimentResult result;
  const SyntheticPool pool = make_synthetic_pool(o.pool);
  const text::ByteTokenizer tokenizer;

  // 1. The base model, pretrained on text in the base_style.
  say(progress, "pretraining the base model");
  seed_everything(o.base_seed);
  lm::CausalLM base(o.model);
  {
    const auto corpus = data::PretrainDataset::from_texts(pool.pretraining, tokenizer, o.pretrain_block);
    data::SamplerOptions sampling;
    sampling.batch_size = o.pretrain_batch_size;
    sampling.seed = o.base_seed;
    train::SampledBatches<data::PretrainDataset> batches(corpus, sampling);
    train::Trainer trainer({{"model", base.ptr()}}, o.pretrain);
    train::NextTokenObjective objective(base);
    result.base_pretrain_loss = trainer.fit(objective, batches).final_loss;
  }
  const int64_t budget = o.max_new_tokens > 0 ? o.max_new_tokens : generation_budget(pool);
  result.max_new_tokens = budget;
  result.constant_answer_accuracy = constant_answer_accuracy(pool.heldout);
  result.base_accuracy = heldout_accuracy(base, pool.heldout, budget, AnswerPrompt::pretraining_text,
                                          nullptr, &result.base_length_limited, &result.base_task_accuracy);
  result.base_accuracy_question_answer =
      heldout_accuracy(base, pool.heldout, budget, AnswerPrompt::question_answer);

  // 2. GRAPE scores of every candidate under the base model.
  say(progress, "scoring the pool");
  base->eval();
  GrapeScoreOptions score_options;
  score_options.max_length = o.model.max_position_embeddings;
  const auto scores = grape_score(base, tokenizer, pool.train, score_options);
  base->train();
  {
    SelectOptions top;
    top.mode = "grape";
    for (const auto& s : select_responses(pool.train, scores, top)) {
      result.grape_wins[pool.train[s.pool].responses[s.candidate].source] += 1;
    }
  }

  auto records_for = [&](const SelectOptions& so, ModeResult* mode) {
    std::vector<data::SftRecord> records;
    for (const auto& s : select_responses(pool.train, scores, so)) {
      data::SftRecord r;
      r.prompt = pool.train[s.pool].instruction;
      r.completion = pool.train[s.pool].responses[s.candidate].text;
      if (mode != nullptr) mode->sources[pool.train[s.pool].responses[s.candidate].source] += 1;
      records.push_back(std::move(r));
    }
    return records;
  };

  // 3. The source that is best on its own (the paper's "strongest model" baseline).
  const bool wants_source =
      std::find(o.modes.begin(), o.modes.end(), "source") != o.modes.end();
  if (wants_source) {
    for (const auto& source : synthetic_sources()) {
      if (!o.pool.sources.empty() &&
          std::find(o.pool.sources.begin(), o.pool.sources.end(), source) == o.pool.sources.end()) {
        continue;
      }
      say(progress, "SFT on source " + source);
      SelectOptions so;
      so.mode = "source";
      so.source = source;
      const auto model = fine_tune(base, records_for(so, nullptr), o, o.seeds.front());
      result.single_source_accuracy[source] = heldout_accuracy(model, pool.heldout, budget, AnswerPrompt::question_answer);
    }
    double best = -1;
    for (const auto& [source, acc] : result.single_source_accuracy) {
      if (acc > best) {
        best = acc;
        result.best_source = source;
      }
    }
  }

  // 4. Every mode, every seed, the same step budget.
  for (const auto& mode_name : o.modes) {
    ModeResult mode;
    mode.mode = mode_name;
    std::vector<double> accuracy;
    std::map<std::string, std::vector<double>> by_task;
    for (size_t i = 0; i < o.seeds.size(); ++i) {
      const uint64_t seed = o.seeds[i];
      SelectOptions so;
      so.mode = mode_name;
      so.seed = seed;
      if (mode_name == "source") so.source = result.best_source;
      say(progress, "SFT on " + mode_name + " selection, seed " + std::to_string(seed));
      const auto records = records_for(so, i == 0 ? &mode : nullptr);
      if (i == 0) mode.examples = static_cast<int64_t>(records.size());
      const auto model = fine_tune(base, records, o, seed);
      std::vector<std::string> texts;
      double limited = 0;
      std::map<std::string, double> tasks;
      accuracy.push_back(heldout_accuracy(model, pool.heldout, budget, AnswerPrompt::question_answer,
                                          &texts, &limited, &tasks));
      for (const auto& [task, acc] : tasks) by_task[task].push_back(acc);
      if (i == 0) mode.length_limited = limited;
      if (i == 0) {
        for (size_t k = 0; k < std::min<size_t>(4, texts.size()); ++k) {
          mode.sample_outputs.push_back(pool.heldout[k].instruction + " -> " + texts[k]);
        }
      }
    }
    mode.accuracy = summarize_over_seeds(accuracy, o.seeds);
    for (const auto& [task, values] : by_task) mode.task_accuracy[task] = summarize_over_seeds(values, o.seeds);
    result.modes.push_back(std::move(mode));
  }
  const auto grape_it = std::find_if(result.modes.begin(), result.modes.end(),
                                     [](const ModeResult& m) { return m.mode == "grape"; });
  if (grape_it != result.modes.end()) {
    for (const auto& m : result.modes) {
      if (m.mode == "grape") continue;
      result.comparisons.push_back({m.mode, difference_of_means(grape_it->accuracy, m.accuracy),
                                    paired_difference(grape_it->accuracy, m.accuracy)});
    }
  }
  return result;
}

std::string premise_caveat(const GrapeExperimentResult& r, double learned) {
  if (r.base_accuracy < learned) {
    return fmt::format("the base model learned the task only partly ({:.1f}% in its own format, "
                       "below {:.0f}%), so GRAPE's premise (a model that can do the task) does "
                       "not hold and the comparison says little (docs/grape.md)",
                       r.base_accuracy, learned);
  }
  double best = 0;
  for (const auto& m : r.modes) best = std::max(best, m.accuracy.mean);
  if (best < r.base_accuracy / 2) {
    return fmt::format("SFT lost most of the base model's skill (the best selection {:.1f}% "
                       "against the base model's {:.1f}%): what it learned in pretraining did "
                       "not survive the switch to the chat template, so the comparison says "
                       "little (docs/grape.md)", best, r.base_accuracy);
  }
  return "";
}

}  // namespace concord::grape
