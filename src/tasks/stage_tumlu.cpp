#include "stage_tumlu.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include <cstdlib>
#include <random>

#include "concord/core/files.h"
#include "concord/eval/tumlu_data.h"
#include "concord/eval/tumlu_eval.h"
#include "concord/eval/tumlu_lm_adapter.h"
#include "concord/eval/tumlu_report.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/text/byte_tokenizer.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

// One question template per script; {0} and {1} are the two addends.
struct SampleLanguage {
  const char* folder;
  const char* subject_file;
  const char* subject;
  const char* question;
};

constexpr SampleLanguage kSample[] = {
    {"turkish", "Mathematics", "Mathematics", "{0} ile {1} sayılarının toplamı kaçtır?"},
    {"kazakh", "maths", "maths", "{0} мен {1} сандарының қосындысы неге тең?"},
    {"uyghur", "math", "math", "{0} بىلەن {1} نىڭ يىغىندىسى قانچە؟"},
};

std::string item_line(const SampleLanguage& lang, std::mt19937_64& rng) {
  const int a = static_cast<int>(rng() % 40) + 2, b = static_cast<int>(rng() % 40) + 2;
  const int sum = a + b;
  const int answer = static_cast<int>(rng() % 4);
  nlohmann::json choices = nlohmann::json::array();
  for (int i = 0; i < 4; ++i) choices.push_back(std::to_string(sum + (i - answer) * 3));
  const nlohmann::json item = {{"subject", lang.subject},
                               {"question", fmt::format(fmt::runtime(lang.question), a, b)},
                               {"choices", choices},
                               {"answer", std::string(1, static_cast<char>('A' + answer))}};
  return item.dump() + "\n";
}

fs::path tumlu_root() {
  if (const char* env = std::getenv("CONCORD_TUMLU_DIR"); env != nullptr && *env != '\0') return env;
  if (const char* shared = std::getenv("CONCORD_SHARED_DIR"); shared != nullptr && *shared != '\0') {
    return fs::path(shared) / "data" / "tumlu-mini";
  }
  return "../shared/data/tumlu-mini";
}

// Wilson's score interval for k successes in n trials at 95% (z = 1.96): better than the
// normal approximation near 0% and 100% and for small n.
std::pair<double, double> wilson_interval(int64_t k, int64_t n) {
  if (n == 0) return {0.0, 1.0};
  const double z = 1.96, p = static_cast<double>(k) / static_cast<double>(n);
  const double nn = static_cast<double>(n), z2 = z * z;
  const double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
  const double half = z * std::sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn);
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

}  // namespace

void write_builtin_tumlu_sample(const fs::path& root, int test_items) {
  std::mt19937_64 rng(2025);
  for (const auto& lang : kSample) {
    std::string dev, test;
    for (int i = 0; i < 5; ++i) dev += item_line(lang, rng);
    for (int i = 0; i < test_items; ++i) test += item_line(lang, rng);
    write_file_atomic(root / lang.folder / "dev" / (std::string(lang.subject_file) + ".jsonl"), dev);
    write_file_atomic(root / lang.folder / "test" / (std::string(lang.subject_file) + ".jsonl"), test);
  }
}

Stage tumlu_stage(const fs::path& model_dir, QuickstartSize size) {
  Stage s;
  s.name = "tumlu";
  s.what = "evaluate the pretrain stage's PanGu-pi on TUMLU-mini: the benchmark's generative "
           "5-shot protocol and log-likelihood";
  s.shows = "the benchmark's protocols end to end, and that a byte model trained for a minute on "
            "English scores at chance on Turkic-language exam questions, as it should";
  s.run = [model_dir, size](RunDirectory& dir) {
    const bool quick = size == QuickstartSize::smoke;
    // One language per script keeps the stage to about a minute: a byte-level 5-shot prompt is
    // thousands of tokens, and every subject needs its own. `concord run` with task `tumlu`
    // evaluates all twelve folders.
    const std::vector<std::string> languages = {"turkish", "kazakh", "uyghur"};
    fs::path root = tumlu_root();
    const bool real = !quick && fs::is_directory(root);
    const int64_t per_subject = real ? (size == QuickstartSize::full ? 4 : 2) : (quick ? 2 : 5);
    if (!real) {
      root = dir.file("builtin-sample");
      write_builtin_tumlu_sample(root, quick ? 2 : 5);
    }
    eval::TumluData data = eval::load_tumlu(root, languages);
    for (auto& language : data.languages) {
      for (auto& subject : language.subjects) {
        if (static_cast<int64_t>(subject.test.size()) > per_subject) subject.test.resize(static_cast<size_t>(per_subject));
      }
    }
    dir.write_config({{"stage", "tumlu"},
                      {"model", model_dir.string()},
                      {"data", root.string()},
                      {"builtin_sample", !real},
                      {"languages", languages},
                      {"test_items_per_subject", per_subject},
                      {"protocols", {"generative", "loglik"}}});

    lm::LoadOptions lo;
    auto model = lm::load_pretrained(model_dir, lo);
    auto tokenizer = std::make_shared<text::ByteTokenizer>();
    eval::CausalLmTumluOptions ao;
    ao.name = "quickstart-pangu-pi";
    eval::CausalLmTumluModel adapter(model, tokenizer, ao);

    std::vector<eval::ModelScores> scores;
    const eval::ReportOptions ro;
    // Chance: the mean over the items of 1 / their number of options (2 to 4).
    double chance = 0;
    for (const auto& lang : data.languages) {
      for (const auto& subject : lang.subjects) {
        for (const auto& item : subject.test) chance += 100.0 / static_cast<double>(item.choices.size());
      }
    }
    chance /= static_cast<double>(std::max<int64_t>(1, data.test_count()));
    std::vector<std::string> pooled;  // "loglik 29.05% [25.1, 33.3], not above chance"
    std::vector<std::vector<std::string>> rows;
    for (const char* protocol : {"generative", "loglik"}) {
      eval::TumluEvalOptions options;
      options.protocol = protocol;
      options.max_new_tokens = 8;  // an answer letter and a little more
      const auto result = eval::run_tumlu_eval(adapter, data, dir.path(), options);
      scores.push_back(eval::score_model(protocol, adapter.name(), result.outcomes, ro));
      int64_t n = 0, k = 0;
      for (const auto& o : result.outcomes) {
        n += static_cast<int64_t>(o.correct.size());
        for (uint8_t c : o.correct) k += c;
      }
      const auto [lo, hi] = wilson_interval(k, n);
      const std::string verdict = 100 * lo > chance   ? "above chance"
                                  : 100 * hi < chance ? "below chance"
                                                      : "not different from chance";
      pooled.push_back(fmt::format("{} {:.2f}% [{:.1f}, {:.1f}], {}", protocol,
                                   n ? 100.0 * k / n : 0.0, 100 * lo, 100 * hi, verdict));
      rows.push_back({protocol, std::to_string(k) + " / " + std::to_string(n),
                      fmt::format("{:.2f}", n ? 100.0 * k / n : 0.0),
                      fmt::format("{:.1f} - {:.1f}", 100 * lo, 100 * hi), fmt::format("{:.2f}", chance),
                      verdict});
    }
    eval::write_tumlu_report(dir.path(), scores, ro, "official");

    Report report("quickstart: tumlu");
    report.paragraph(fmt::format(
        "The pretrain stage's PanGu-π (byte tokenizer) on {} (Turkish, Kazakh and Uyghur: one "
        "language per script; {} test items, at most {} per subject), shuffled options, the official extractor for the generative protocol. Every "
        "item's prompt, output and answer are in `<language>/outputs/<protocol>/`. A model this "
        "small trained on English for seconds scores near chance (25% for 4 choices): the stage "
        "exercises the benchmark pipeline.",
        real ? "TUMLU-mini (`" + root.string() + "`)" : "Concord's built-in arithmetic sample",
        data.test_count(), per_subject));
    report.heading("Accuracy against chance (all languages pooled)")
        .paragraph("Chance is the mean over the items of 1 / their number of options; the "
                   "interval is Wilson's 95% score interval over the items. An accuracy whose "
                   "interval holds the chance level is not evidence of any knowledge.")
        .table({"protocol", "correct", "accuracy %", "95% interval", "chance %", "verdict"}, rows);
    report.heading("Accuracy per language (%)").raw(eval::markdown_language_table(scores) + "\n");
    report.write(dir.file("report.md"));
    return fmt::format("{} items per protocol on {} (chance {:.1f}%): {}; {}", data.test_count(),
                       real ? "TUMLU-mini" : "the built-in sample", chance, pooled[0], pooled[1]);
  };
  return s;
}

}  // namespace concord::tasks
