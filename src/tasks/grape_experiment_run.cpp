#include "grape_experiment_run.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/plot.h"
#include "concord/lm/model_config.h"

namespace concord::tasks {

namespace {

// A byte-level Llama-style base model small enough for minutes on a CPU.
lm::ModelConfig base_model(int64_t hidden, int64_t layers) {
  return lm::model_config_from_json(
      {{"family", "llama"}, {"vocab_size", 257}, {"hidden_size", hidden}, {"num_layers", layers},
       {"num_heads", 4}, {"intermediate_size", hidden * 8 / 3}, {"max_position_embeddings", 256},
       {"bos_token_id", 256}, {"eos_token_id", 256}, {"pad_token_id", 256}},
      "grape experiment model");
}

// The task's keys: the generated pool, the base model's size, the modes compared, and the
// pretraining and SFT budgets.
struct ExperimentConfig {
  int64_t train_instructions = 256;
  int64_t heldout_instructions = 128;
  std::vector<std::string> tasks;
  int64_t pretraining_documents = 512;
  Json pretraining_styles = Json::object();
  double pretraining_line_breaks = 0.0;
  uint64_t pool_seed = 1234;
  uint64_t base_seed = 1;
  int64_t hidden_size = 128;
  int64_t num_layers = 4;
  std::vector<std::string> modes = {"grape", "random", "source", "reverse", "all"};
  std::vector<uint64_t> seeds = {1, 2, 3};
  int64_t max_new_tokens = 0;
  int64_t pretrain_batch_size = 16;
  int64_t sft_batch_size = 16;
  train::TrainerOptions pretrain;
  train::TrainerOptions sft;
};

const OptionsSchema<ExperimentConfig>& experiment_schema() {
  static const OptionsSchema<ExperimentConfig> schema = [] {
    const auto trainer_section = [](OptionsSchema<ExperimentConfig>& s, const std::string& name,
                                    train::TrainerOptions ExperimentConfig::*member,
                                    const std::string& help) {
      s.section(name, member, train::trainer_options_schema(), help);
    };
    OptionsSchema<ExperimentConfig> s("grape_experiment task");
    s.field("train_instructions", &ExperimentConfig::train_instructions,
            "instructions in the GRAPE pool", opt::at_least(1))
        .field("heldout_instructions", &ExperimentConfig::heldout_instructions,
               "held-out instructions scored", opt::at_least(1))
        .field("tasks", &ExperimentConfig::tasks, "task families (empty: all)")
        .field("pretraining_documents", &ExperimentConfig::pretraining_documents,
               "pretraining documents (facts in each family's pretraining style)", opt::at_least(1))
        .field("pretraining_styles", &ExperimentConfig::pretraining_styles,
               "task family -> the style of its pretraining facts (terse, sentence, base_style; "
               "default base_style)")
        .field("pretraining_line_breaks", &ExperimentConfig::pretraining_line_breaks,
               "share of pretraining facts whose response starts on a new line (SFT's template "
               "puts one there)", opt::in_range(0.0, 1.0))
        .field("pool_seed", &ExperimentConfig::pool_seed, "seed of the generated pool")
        .field("base_seed", &ExperimentConfig::base_seed,
               "seed of the base model's initialisation and pretraining data order")
        .field("hidden_size", &ExperimentConfig::hidden_size, "base model width", opt::at_least(4))
        .field("num_layers", &ExperimentConfig::num_layers, "base model depth", opt::at_least(1))
        .field("modes", &ExperimentConfig::modes, "selection modes compared")
        .field("seeds", &ExperimentConfig::seeds, "SFT seeds per mode")
        .field("max_new_tokens", &ExperimentConfig::max_new_tokens,
               "generation limit when scoring answers (0: the pool's longest response + 8)",
               opt::at_least(0))
        .field("pretrain_batch_size", &ExperimentConfig::pretrain_batch_size,
               "pretraining rows (128-byte blocks) a step", opt::at_least(1))
        .field("sft_batch_size", &ExperimentConfig::sft_batch_size, "SFT rows a step", opt::at_least(1));
    trainer_section(s, "pretrain", &ExperimentConfig::pretrain, "the base model's pretraining");
    trainer_section(s, "sft", &ExperimentConfig::sft,
                    "each SFT run (the same budget for every mode)");
    return s;
  }();
  return schema;
}

grape::GrapeExperimentOptions options_from(const ExperimentConfig& c) {
  grape::GrapeExperimentOptions o;
  o.pool.train_instructions = c.train_instructions;
  o.pool.heldout_instructions = c.heldout_instructions;
  o.pool.tasks = c.tasks;
  o.pool.pretraining_documents = c.pretraining_documents;
  CONCORD_CHECK(c.pretraining_styles.is_object(),
                "grape_experiment: pretraining_styles must be an object (task -> style), got ",
                c.pretraining_styles.dump());
  for (const auto& [task, style] : c.pretraining_styles.items()) {
    CONCORD_CHECK(style.is_string(), "grape_experiment: pretraining_styles.", task,
                  " must be a string (terse, sentence or base_style), got ", style.dump());
    o.pool.pretraining_styles[task] = style.get<std::string>();
  }
  o.pool.pretraining_line_breaks = c.pretraining_line_breaks;
  o.pool.seed = c.pool_seed;
  o.base_seed = c.base_seed;
  o.model = base_model(c.hidden_size, c.num_layers);
  o.pretrain = c.pretrain;
  o.sft = c.sft;
  o.modes = c.modes;
  o.seeds = c.seeds;
  o.max_new_tokens = c.max_new_tokens;
  o.pretrain_batch_size = c.pretrain_batch_size;
  o.sft_batch_size = c.sft_batch_size;
  return o;
}

std::string pretraining_styles_text(const grape::SyntheticPoolOptions& pool) {
  if (pool.pretraining_styles.empty()) return "the base_style";
  std::string out;
  for (const auto& [task, style] : pool.pretraining_styles) out += (out.empty() ? "" : ", ") + task + ": " + style;
  return "per-family styles (" + out + "; others base_style)";
}

// The quickstart's base model and budgets (quick and full sizes).
constexpr int64_t kQuickstartGrapeWidth = 128;
constexpr int64_t kQuickstartGrapeLayers = 4;
constexpr int64_t kQuickstartGrapePretrainSteps = 1500;
constexpr int64_t kQuickstartGrapeSftSteps = 150;

}  // namespace

void report_grape_experiment(const grape::GrapeExperimentResult& r,
                             const grape::GrapeExperimentOptions& o, RunDirectory& dir,
                             Report& report) {
  write_file_atomic(dir.file("results.json"), r.to_json().dump(2) + "\n");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> labels;
  std::vector<double> means, half_widths;
  for (const auto& m : r.modes) {
    std::string sources;
    for (const auto& [name, n] : m.sources) sources += (sources.empty() ? "" : ", ") + name + " " + std::to_string(n);
    const std::string label = m.mode == "source" ? "source (" + r.best_source + ")" : m.mode;
    const auto& a = m.accuracy;
    std::string per_seed;
    for (double v : a.values) per_seed += (per_seed.empty() ? "" : ", ") + fixed(v, 1);
    rows.push_back({label, fixed(a.mean, 2),
                    a.has_interval ? fixed(a.ci_low, 1) + " - " + fixed(a.ci_high, 1) : "one seed",
                    per_seed, std::to_string(m.examples), sources});
    labels.push_back(label);
    means.push_back(a.mean);
    half_widths.push_back(a.has_interval ? a.ci_high - a.mean : 0.0);
    dir.metrics().log_json({{"step", 0}, {"mode", m.mode}, {"eval/accuracy_mean", a.mean},
                            {"eval/accuracy_std", a.stddev}});
  }
  std::string wins;
  for (const auto& [name, n] : r.grape_wins) wins += (wins.empty() ? "" : ", ") + name + " " + std::to_string(n);
  report.paragraph(fmt::format(
      "Pool: {} instructions with one correct response from each source, {} held-out "
      "instructions checked by a program. Base model: byte-level Llama-style, d = {}, {} layers, "
      "pretrained {} steps on facts in {} (final loss {:.3f}); held-out accuracy before SFT "
      "{:.2f}% asked in its pretraining text's format ({:.2f}% with the chat template SFT "
      "teaches), against {:.2f}% for the best constant answer. Every SFT run: {} steps of {} rows "
      "from the base weights. GRAPE's top choice per source: {}.",
      o.pool.train_instructions, o.pool.heldout_instructions, o.model.hidden_size,
      o.model.num_layers, o.pretrain.max_steps, pretraining_styles_text(o.pool),
      r.base_pretrain_loss, r.base_accuracy, r.base_accuracy_question_answer, r.constant_answer_accuracy, o.sft.max_steps,
      o.sft_batch_size, wins));
  std::string limited;
  if (r.base_length_limited > 0.5) limited += fmt::format(" base {:.0f}%", 100 * r.base_length_limited);
  for (const auto& m : r.modes) {
    if (m.length_limited > 0.5) limited += fmt::format(" {} {:.0f}%", m.mode, 100 * m.length_limited);
  }
  report.paragraph(fmt::format("Generation limit: {} tokens{}.", r.max_new_tokens,
                               o.max_new_tokens > 0 ? "" : " (the pool's longest response + 8)"));
  if (!limited.empty()) {
    report.paragraph("**Warning:** most held-out generations stopped at the limit, so accuracy "
                     "counts unfinished answers (share cut:" + limited + "); raise "
                     "max_new_tokens.");
    spdlog::warn("grape experiment: most generations hit the {}-token limit:{}", r.max_new_tokens, limited);
  }
  std::vector<std::string> verdicts;
  for (const auto& cmp : r.comparisons) {
    const auto& p = cmp.paired;
    verdicts.push_back(describe_difference("grape", cmp.mode, cmp.grape_minus_mode, 1, " points") +
                       (p.testable ? fmt::format("; paired by seed: [{:+.1f}, {:+.1f}] points: {}", p.ci_low,
                                                 p.ci_high, p.significant ? "significant" : "not significant")
                                   : std::string()));
  }
  report.heading("Held-out accuracy after SFT (%)")
      .paragraph(fmt::format("Constant-answer level {:.2f}%; the interval is Student's t 95% "
                             "interval of the mean over the seeds.", r.constant_answer_accuracy))
      .table({"selection", "mean", "95% interval", "per seed", "SFT examples", "selected per source"}, rows);
  for (const auto& v : verdicts) report.bullet(v);
  {
    // Per task family: which skills each selection keeps.
    std::vector<std::string> header = {"selection"};
    for (const auto& [task, acc] : r.base_task_accuracy) header.push_back(task);
    std::vector<std::vector<std::string>> trows;
    std::vector<std::string> base_row = {"base model (its own format)"};
    for (const auto& [task, acc] : r.base_task_accuracy) base_row.push_back(fixed(acc, 1));
    trows.push_back(base_row);
    for (const auto& m : r.modes) {
      std::vector<std::string> row = {m.mode};
      for (const auto& [task, acc] : r.base_task_accuracy) {
        const auto it = m.task_accuracy.find(task);
        row.push_back(it == m.task_accuracy.end() ? "" : with_interval(it->second, 1));
      }
      trows.push_back(row);
    }
    report.heading("Held-out accuracy per task family (%)", 3)
        .paragraph("Each family's pretraining style: " + pretraining_styles_text(o.pool) + ".")
        .table(header, trows);
  }
  if (!r.single_source_accuracy.empty()) {
    std::vector<std::vector<std::string>> srows;
    for (const auto& [s, a] : r.single_source_accuracy) srows.push_back({s, fixed(a, 2)});
    report.heading("Each source on its own (first seed)", 3).table({"source", "accuracy (%)"}, srows);
  }
  report.heading("First held-out generations (first seed)", 3);
  for (const auto& m : r.modes) {
    std::string block;
    for (const auto& line : m.sample_outputs) block += line + "\n";
    report.paragraph("`" + m.mode + "`:").code(block);
  }
  plot_bars(dir.chart("accuracy.png"),
            {"held-out accuracy after SFT (mean, 95% interval)", "", "accuracy (%)"}, labels, means,
            half_widths);
  report.image("accuracy", "charts/accuracy.png");
}

Task grape_experiment_task() {
  Task t;
  t.summary = "GRAPE's controlled experiment in miniature: SFT on grape / random / best source / "
              "reverse / all selections of a generated pool, held-out accuracy";
  t.schema = [] { return experiment_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const auto o = options_from(experiment_schema().read(config));
    const auto result = grape::run_grape_experiment(o, [](const std::string& what) {
      spdlog::info("grape experiment: {}", what);
    });
    report_grape_experiment(result, o, dir, report);
  };
  return t;
}

Stage grape_stage(QuickstartSize size) {
  Stage s;
  s.name = "grape";
  s.what = "GRAPE against random selection on a generated pool: a base model pretrained on facts "
           "in a style of its own, its scores pick each instruction's response, SFT, held-out "
           "accuracy";
  s.shows = "whether fine-tuning on the responses the base model finds most probable (GRAPE) "
            "beats a random correct response per instruction at the same step budget";
  if (size == QuickstartSize::quick) {
    s.skipped = "its base model needs about 3 minutes of pretraining before it can do the tasks "
                "at all (below that, every selection scores near 0% and the comparison says "
                "nothing); `concord quickstart` without --quick runs it";
  }
  s.run = [size](RunDirectory& dir) {
    const bool smoke = size == QuickstartSize::smoke;
    // One family a small byte model learns within ~1500 pretraining steps (a copy with a case
    // map: the loss sits on a plateau until the copy emerges near step 1000). `lower` in the
    // same budget is not learned (grape_experiment.json's 2000 steps learn `upper` only too),
    // so the stage leaves it out. SFT needs its 150 steps at 1e-3 to carry the young copy
    // circuit over to the chat template: 100 steps (at 1e-3 or 3e-4) left the SFT models at
    // 0-6% against a 99% base model. Whether the copy forms in pretraining, and survives SFT,
    // turns on the seed and the floating-point summation order at every budget tried (1500 and
    // 2000 steps, responses on their instruction's line or half on the next: docs/grape.md),
    // so the stage says when either failed (grape::premise_caveat).
    const ExperimentConfig c = experiment_schema().from_json(
        {{"train_instructions", smoke ? 32 : 256},
         {"heldout_instructions", smoke ? 16 : 64},
         {"tasks", {"upper"}},
         {"pretraining_documents", smoke ? 32 : 512},
         {"hidden_size", smoke ? 32 : kQuickstartGrapeWidth},
         {"num_layers", smoke ? 2 : kQuickstartGrapeLayers},
         {"modes", Json({"grape", "random"})},
         {"seeds", smoke ? Json({1}) : Json({1, 2, 3})},
         {"pretrain", {{"max_steps", smoke ? 4 : kQuickstartGrapePretrainSteps}, {"lr", 3e-3},
                       {"warmup_steps", smoke ? 1 : 50}, {"progress", false}}},
         {"sft", {{"max_steps", smoke ? 4 : kQuickstartGrapeSftSteps}, {"lr", 1e-3},
                  {"warmup_steps", smoke ? 1 : 15}, {"progress", false}}}},
        "quickstart grape stage");
    dir.write_config(experiment_schema().to_json(c));
    const auto o = options_from(c);
    const auto result = grape::run_grape_experiment(o);
    Report report("quickstart: grape");
    // The stage's one family must be learned, so the first case applies in full.
    const std::string caveat = grape::premise_caveat(result);
    if (!caveat.empty() && !smoke) {
      report.paragraph("**Caveat:** " + caveat + ".");
      spdlog::warn("quickstart grape: {}", caveat);
    }
    report_grape_experiment(result, o, dir, report);
    report.write(dir.file("report.md"));
    const auto& g = result.modes[0].accuracy;
    const auto& r = result.modes[1].accuracy;
    return fmt::format("held-out accuracy over {} seeds, GRAPE {:.1f}% vs random {:.1f}%: {}; base "
                       "model {:.1f}% in its own format, best constant answer {:.1f}%{}",
                       g.values.size(), g.mean, r.mean,
                       describe_difference("GRAPE", "random", result.comparisons[0].paired, 1, " points"),
                       result.base_accuracy, result.constant_answer_accuracy,
                       caveat.empty() || smoke ? "" : "; caveat: " + caveat);
  };
  return s;
}

}  // namespace concord::tasks
