// Evaluate a model of your own on TUMLU (eval/tumlu_eval.h): implement eval::TumluModel's three
// methods and the driver runs the benchmark's protocols on it (the 5-shot prompts in each
// language, seeded option shuffling), writes the outputs in the benchmark's layout and scores them
// with the paper's averages and bootstrap intervals (eval/tumlu_report.h).
//
//   build/examples/example_tumlu_own_model MODEL_DIR TUMLU_DIR [--languages a,b,...] [--items N]
//       [--protocol loglik|generative] [--extractor official|robust] [--out DIR]
//
// The model here, MyModel, wraps a CausalLM loaded from a Hugging Face folder and answers through
// lm::generate_text and lm::score_texts: replace its body with your own model (a Python server, a
// different architecture, a rule-based baseline) and the rest stays. For Concord's own language
// models, eval::CausalLmTumluModel (eval/tumlu_lm_adapter.h) does the same with a shared KV cache
// of the five shots, several times faster. TUMLU_DIR is TUMLU-mini in its published layout
// (<language>/{dev,test}/<Subject>.jsonl), e.g. ../shared/data/tumlu-mini; --items N keeps the
// first N test items of each subject. On the committed fixtures (seconds), as one command line:
//
//   build/examples/example_tumlu_own_model tests/fixtures/examples/tiny-llama
//       tests/fixtures/examples/tumlu-tiny --out /tmp/tumlu-example
//
// and on real data, two languages, 3 items of each subject (a minute on 2 cores), one line too:
//
//   build/examples/example_tumlu_own_model tests/fixtures/examples/tiny-llama
//       ../shared/data/tumlu-mini --languages azerbaijani,kazakh --items 3 --out /tmp/tumlu-real
//
// The out folder gets <language>/outputs/<protocol>/<model>/<Subject>.json, results.json,
// report.md and a chart. A subject whose outputs file exists is not run again (resume): use a
// fresh --out to re-run. The model is random, so expect chance-level accuracy (~25%).
// ci: @FIXTURES@/examples/tiny-llama @FIXTURES@/examples/tumlu-tiny --out @OUT@
// ci-expect: items 6, answers read in 6 [(]6 loaded
#include <algorithm>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "concord/concord.h"  // the whole library in one include (or include the headers you use)

namespace {

namespace eval = concord::eval;
namespace lm = concord::lm;

// What the TUMLU driver needs from a model: a name, greedy generation with stop strings, and
// log-likelihoods of continuations after a prefix.
class MyModel : public eval::TumluModel {
 public:
  MyModel(lm::CausalLM model, std::shared_ptr<const concord::text::Tokenizer> tokenizer,
          std::string name)
      : model_(std::move(model)), tokenizer_(std::move(tokenizer)), name_(std::move(name)) {}

  // Outputs go to <out>/<language>/outputs/<protocol>/<name()>/.
  std::string name() const override { return name_; }

  // The "generative" protocol: the benchmark's 5-shot prompt ending in "Cavab: " (in the item's
  // language); the driver reads the chosen letter out of the text with an answer extractor.
  std::vector<std::string> generate(const std::vector<std::string>& prompts,
                                    const std::vector<std::string>& stop_strings,
                                    int64_t max_new_tokens) override {
    lm::GenerationOptions options;  // greedy
    options.max_new_tokens = max_new_tokens;
    options.stop_strings = stop_strings;  // the next "\nSual:": the model would start a new item
    std::vector<std::string> texts;
    for (const auto& g : lm::generate_text(model_, *tokenizer_, prompts, options)) {
      texts.push_back(g.text);
    }
    return texts;
  }

  // The "loglik" protocol: the same prompt as a prefix, each option's letter (" A", " B", ...)
  // as a continuation; the driver takes the argmax (acc) and the argmax per character (acc_norm).
  std::vector<double> loglik(const std::string& prefix,
                             const std::vector<std::string>& continuations) override {
    const std::vector<std::string> prefixes(continuations.size(), prefix);
    std::vector<double> out;
    for (const auto& s : lm::score_texts(model_, *tokenizer_, prefixes, continuations)) {
      out.push_back(s.sum);
    }
    return out;
  }

 private:
  lm::CausalLM model_;
  std::shared_ptr<const concord::text::Tokenizer> tokenizer_;
  std::string name_;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string part; std::getline(in, part, ',');) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    concord::init_runtime();
    std::vector<std::string> positional, languages;
    std::string protocol = "loglik", extractor = "official", out = "runs/example_tumlu_own_model";
    int64_t items = 0;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        CONCORD_CHECK(i + 1 < argc, "option ", arg, " needs a value");
        return argv[++i];
      };
      if (arg == "--languages") languages = split_commas(value());
      else if (arg == "--items") {
        const std::string v = value();
        CONCORD_CHECK(!v.empty() && std::all_of(v.begin(), v.end(), ::isdigit),
                      "--items takes a count, got '", v, "'");
        items = std::stoll(v);
      }
      else if (arg == "--protocol") protocol = value();
      else if (arg == "--extractor") extractor = value();
      else if (arg == "--out") out = value();
      else if (!arg.empty() && arg[0] == '-') concord::fail("unknown option ", arg);
      else positional.push_back(arg);
    }
    CONCORD_CHECK(positional.size() == 2,
                  "usage: example_tumlu_own_model MODEL_DIR TUMLU_DIR [--languages a,b] "
                  "[--items N] [--protocol loglik|generative] [--extractor official|robust] "
                  "[--out DIR]");

    // The model under test.
    auto model = lm::load_pretrained(positional[0]);
    std::shared_ptr<const concord::text::Tokenizer> tokenizer =
        concord::text::load_tokenizer(positional[0]);
    MyModel my_model(model, tokenizer, "my-model");

    // The data: every TUMLU folder found (or --languages), optionally the first N test items of
    // each subject (the dev items stay: they are the five shots).
    eval::TumluData data = eval::load_tumlu(positional[1], languages);
    int64_t n_items = 0;
    for (auto& language : data.languages) {
      for (auto& subject : language.subjects) {
        if (items > 0 && static_cast<int64_t>(subject.test.size()) > items) subject.test.resize(items);
        n_items += static_cast<int64_t>(subject.test.size());
      }
    }

    eval::TumluEvalOptions options;  // seeded shuffling (seed 1234), batch 16, one process
    options.protocol = protocol;
    options.extractor = extractor;
    const eval::TumluEvalResult result = eval::run_tumlu_eval(my_model, data, out, options);

    // Scores: per subject, per language (unweighted mean over the headline subjects, as the
    // paper), per script, with 95% bootstrap intervals.
    eval::ReportOptions report;
    const eval::ModelScores scores =
        eval::score_model(protocol, my_model.name(), result.outcomes, report);
    eval::write_tumlu_report(out, {scores}, report, extractor);

    int64_t answered = 0, scored = 0;
    for (const auto& outcome : result.outcomes) {
      answered += outcome.extracted;
      scored += static_cast<int64_t>(outcome.correct.size());
    }
    std::cout << eval::markdown_language_table({scores}) << "\n"
              << eval::markdown_subject_table(scores) << "\n"
              << "items " << scored << ", answers read in " << answered << " (" << n_items
              << " loaded; subjects run now " << result.subjects_run << ", resumed "
              << result.subjects_resumed << ")\n"
              << "report: " << (std::filesystem::path(out) / "report.md").string() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "example_tumlu_own_model: error: " << concord::one_line_message(e) << "\n";
    return 1;
  }
  return 0;
}
