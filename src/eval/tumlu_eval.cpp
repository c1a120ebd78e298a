#include "concord/eval/tumlu_eval.h"

#include <algorithm>

#include "concord/core/error.h"
#include "concord/core/logging.h"
#include "concord/core/shard.h"
#include "text_util.h"

namespace fs = std::filesystem;

namespace concord::eval {

std::vector<std::vector<double>> TumluModel::loglik_batch(const std::vector<LoglikRequest>& requests) {
  std::vector<std::vector<double>> out;
  out.reserve(requests.size());
  for (const auto& r : requests) out.push_back(loglik(r.prefix, r.continuations));
  return out;
}

bool TumluProtocol::applies_to(const TumluLanguage&, const TumluSubjectSet& subject) const {
  return !subject.test.empty();
}

namespace {

TumluRecord base_record(const TumluSubjectSet& subject, size_t index, const TumluPrompt& prompt) {
  TumluRecord r;
  r.question = subject.test[index].question;
  r.choices = prompt.item.choices;
  r.answer = answer_letter(prompt.item.answer);
  r.system = prompt.shots;
  r.input = prompt.input;
  r.index = static_cast<int64_t>(index);
  r.subject = subject_name(subject.subject);
  r.order = prompt.item.order;
  return r;
}

class GenerativeProtocol : public TumluProtocol {
 public:
  explicit GenerativeProtocol(PromptStyle style) : style_(style) {}

  std::string name() const override {
    return style_ == PromptStyle::cot ? "generative_cot" : "generative";
  }

  bool applies_to(const TumluLanguage& language, const TumluSubjectSet& subject) const override {
    if (subject.test.empty()) return false;
    if (style_ == PromptStyle::cot) return !language.solution_keyword.empty() && subject.has_cot();
    return true;
  }

  std::vector<TumluRecord> run(TumluModel& model, const TumluLanguage& language,
                               const TumluSubjectSet& subject, const std::vector<size_t>& indices,
                               const TumluEvalOptions& options,
                               const AnswerExtractor& extractor) const override {
    PromptOptions po;
    po.style = style_;
    po.shuffle = options.shuffle;
    po.seed = options.seed;
    const std::string shots = build_shots(language, subject, po);
    const auto stops = stop_strings(language);
    const int64_t max_new = options.max_new_tokens > 0 ? options.max_new_tokens
                            : style_ == PromptStyle::cot ? 512
                                                         : 32;
    const size_t batch = static_cast<size_t>(std::max<int64_t>(1, options.batch_size));

    std::vector<TumluRecord> records;
    for (size_t start = 0; start < indices.size(); start += batch) {
      const size_t end = std::min(indices.size(), start + batch);
      std::vector<TumluPrompt> prompts;
      std::vector<std::string> texts;
      for (size_t k = start; k < end; ++k) {
        prompts.push_back(build_prompt(language, subject, indices[k], po, shots));
        texts.push_back(prompts.back().full());
      }
      const auto outputs = model.generate(texts, stops, max_new);
      CONCORD_CHECK(outputs.size() == texts.size(), "TumluModel::generate returned ",
                    outputs.size(), " outputs for ", texts.size(), " prompts");
      for (size_t k = start; k < end; ++k) {
        TumluRecord r = base_record(subject, indices[k], prompts[k - start]);
        r.output = python_strip(outputs[k - start]);  // the published scripts store .strip()
        auto letter = extractor.extract(r.output, language, r.choices);
        if (letter) r.prediction = std::string(1, *letter);
        records.push_back(std::move(r));
      }
    }
    return records;
  }

 private:
  PromptStyle style_;
};

class LoglikProtocol : public TumluProtocol {
 public:
  std::string name() const override { return "loglik"; }

  std::vector<TumluRecord> run(TumluModel& model, const TumluLanguage& language,
                               const TumluSubjectSet& subject, const std::vector<size_t>& indices,
                               const TumluEvalOptions& options,
                               const AnswerExtractor&) const override {
    CONCORD_CHECK(options.loglik_target == "letter" || options.loglik_target == "text",
                  "TUMLU loglik_target: expected letter or text, got '", options.loglik_target, "'");
    PromptOptions po;
    po.shuffle = options.shuffle;
    po.seed = options.seed;
    const std::string shots = build_shots(language, subject, po);
    // The whole subject in one call: the model batches the items itself and can order them by
    // length (CausalLmTumluModel sorts them and runs item_batch_size at a time), which slices of
    // batch_size items in the subject's order would prevent.
    std::vector<TumluRecord> records;
    std::vector<TumluPrompt> prompts;
    std::vector<TumluModel::LoglikRequest> requests;
    for (size_t index : indices) {
      prompts.push_back(build_prompt(language, subject, index, po, shots));
      const TumluPrompt& prompt = prompts.back();
      // The prompt ends "Cavab: "; the space moves into the continuations (" A"), where
      // word-initial tokenizers expect it.
      TumluModel::LoglikRequest request;
      request.prefix = prompt.full();
      if (!request.prefix.empty() && request.prefix.back() == ' ') request.prefix.pop_back();
      for (size_t i = 0; i < prompt.item.choices.size(); ++i) {
        request.continuations.push_back(options.loglik_target == "letter"
                                            ? " " + answer_letter(static_cast<int>(i))
                                            : " " + prompt.item.choices[i]);
      }
      requests.push_back(std::move(request));
    }
    if (requests.empty()) return records;
    const auto all_scores = model.loglik_batch(requests);
    CONCORD_CHECK(all_scores.size() == requests.size(), "TumluModel::loglik_batch returned ",
                  all_scores.size(), " score vectors for ", requests.size(), " requests");
    for (size_t k = 0; k < requests.size(); ++k) {
      const auto& scores = all_scores[k];
      const auto& continuations = requests[k].continuations;
      CONCORD_CHECK(scores.size() == continuations.size(), "TumluModel::loglik returned ",
                    scores.size(), " scores for ", continuations.size(), " continuations");
      TumluRecord r = base_record(subject, indices[k], prompts[k]);
      r.loglik = scores;
      for (size_t i = 0; i < scores.size(); ++i) {
        const size_t length = std::max<size_t>(1, detail::code_points(continuations[i]));
        r.loglik_norm.push_back(scores[i] / static_cast<double>(length));
      }
      const int best = static_cast<int>(std::max_element(scores.begin(), scores.end()) - scores.begin());
      r.output = answer_letter(best);
      r.prediction = r.output;
      records.push_back(std::move(r));
    }
    return records;
  }
};

ShardParts subject_parts(const fs::path& final_path, int world) {
  return ShardParts(final_path.parent_path() / ".shards", final_path.filename().string(), world);
}

// Merges the parts when every rank's is there; returns true when the final file exists after.
bool try_merge(const fs::path& final_path, int world, size_t items) {
  if (fs::exists(final_path)) return true;
  auto merged = merge_shard_parts_if_complete<TumluRecord>(
      subject_parts(final_path, world), [](const fs::path& p) { return read_tumlu_outputs(p); },
      [](const TumluRecord& r) { return r.index; }, static_cast<int64_t>(items),
      final_path.string());
  if (!merged) return false;
  // Two ranks finishing together may both merge: the content is the same and the write is
  // atomic, so either result stands.
  write_tumlu_outputs(final_path, *merged);
  return true;
}

}  // namespace

Registry<TumluProtocolFactory>& tumlu_protocols() {
  static Registry<TumluProtocolFactory> registry = [] {
    Registry<TumluProtocolFactory> r("TUMLU protocol");
    r.add("generative", [] { return std::make_unique<GenerativeProtocol>(PromptStyle::fewshot); });
    r.add("generative_cot", [] { return std::make_unique<GenerativeProtocol>(PromptStyle::cot); });
    r.add("loglik", [] { return std::make_unique<LoglikProtocol>(); });
    return r;
  }();
  return registry;
}

const OptionsSchema<TumluEvalOptions>& tumlu_eval_options_schema() {
  static const OptionsSchema<TumluEvalOptions> schema = [] {
    OptionsSchema<TumluEvalOptions> s("TUMLU evaluation");
    s.field("protocol", &TumluEvalOptions::protocol,
            "generative (5-shot), generative_cot (worked-solution shots) or loglik (options "
            "scored), or one added to tumlu_protocols()")
        .field("languages", &TumluEvalOptions::languages,
               "language folders to evaluate (empty: all present)")
        .field("shuffle", &TumluEvalOptions::shuffle, "shuffle options (seeded per item)")
        .field("shuffle_seed", &TumluEvalOptions::seed, "seed of the option shuffling")
        .field("max_new_tokens", &TumluEvalOptions::max_new_tokens,
               "generation limit (0: 32 for generative, 512 for cot)", opt::at_least(0))
        .field("batch_size", &TumluEvalOptions::batch_size,
               "prompts per generation batch; loglik: items per forward pass", opt::at_least(1))
        .field("loglik_target", &TumluEvalOptions::loglik_target,
               "loglik continuation: \" A\" or \" \" + option text", opt::one_of({"letter", "text"}))
        .field("extractor", &TumluEvalOptions::extractor,
               "answer extractor: official or robust, or one added to answer_extractors()");
    return s;
  }();
  return schema;
}

TumluEvalResult run_tumlu_eval(TumluModel& model, const TumluData& data, const fs::path& out_root,
                               const TumluEvalOptions& options) {
  CONCORD_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
                "TUMLU: rank ", options.rank, " out of range for world size ", options.world_size);
  tumlu_eval_options_schema().validate(options, "TUMLU options");
  const auto protocol = tumlu_protocols().get(options.protocol)();
  const auto extractor = make_answer_extractor(options.extractor);
  const std::string model_name = model.name();
  for (const auto& f : options.languages) tumlu_language(f);

  TumluEvalResult result;
  for (const auto& set : data.languages) {
    const TumluLanguage& language = *set.language;
    if (!options.languages.empty() &&
        std::find(options.languages.begin(), options.languages.end(), language.folder) ==
            options.languages.end()) {
      continue;
    }
    for (const auto& subject : set.subjects) {
      if (!protocol->applies_to(language, subject)) {
        ++result.subjects_not_applicable;
        continue;
      }
      const fs::path final_path =
          tumlu_output_path(out_root, language.folder, protocol->name(), model_name, subject.file_stem);
      bool done = fs::exists(final_path);
      if (done) {
        ++result.subjects_resumed;
      } else if (options.world_size == 1) {
        std::vector<size_t> all(subject.test.size());
        for (size_t i = 0; i < all.size(); ++i) all[i] = i;
        spdlog::info("tumlu {} | {} | {} | {} items", protocol->name(), language.folder,
                     subject.file_stem, all.size());
        write_tumlu_outputs(final_path,
                            protocol->run(model, language, subject, all, options, *extractor));
        ++result.subjects_run;
        done = true;
      } else {
        const fs::path part = subject_parts(final_path, options.world_size).path(options.rank);
        if (fs::exists(part)) {
          ++result.subjects_resumed;
        } else {
          std::vector<size_t> mine;
          for (size_t i = static_cast<size_t>(options.rank); i < subject.test.size();
               i += static_cast<size_t>(options.world_size)) {
            mine.push_back(i);
          }
          spdlog::info("tumlu {} | {} | {} | rank {}/{} | {} items", protocol->name(),
                       language.folder, subject.file_stem, options.rank, options.world_size,
                       mine.size());
          write_tumlu_outputs(part, protocol->run(model, language, subject, mine, options, *extractor));
          ++result.subjects_run;
        }
        done = try_merge(final_path, options.world_size, subject.test.size());
        if (!done) ++result.subjects_pending;
      }
      if (done) {
        result.outcomes.push_back(
            score_records(read_tumlu_outputs(final_path), language, subject.file_stem, *extractor));
      }
    }
  }
  return result;
}

}  // namespace concord::eval
