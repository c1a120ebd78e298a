#include "task_grape.h"

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/logging.h"
#include "concord/core/options.h"
#include "concord/core/runtime.h"
#include "concord/core/shard.h"
#include "concord/data/grape_pool.h"
#include "concord/data/jsonl.h"
#include "concord/grape/score.h"
#include "concord/grape/select.h"
#include "concord/text/tokenizer.h"
#include "concord/tasks/model_loading.h"

namespace concord::tasks {

namespace {


std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + (n.empty() ? "(none)" : n);
  return out;
}

// The task's config: its own keys, GRAPE's scoring keys and the selection keys (the run's seed
// seeds mode random), all at the top level.
struct GrapeTaskOptions {
  std::string model;
  std::string weights;
  std::string tokenizer;
  std::string pool;
  grape::GrapeScoreOptions scoring;
  grape::SelectOptions selection;
  std::string on_bad_record = "stop";
  std::string device = "cpu";
};

const OptionsSchema<GrapeTaskOptions>& grape_task_options_schema() {
  static const OptionsSchema<GrapeTaskOptions> schema = [] {
    OptionsSchema<GrapeTaskOptions> s("grape task");
    s.field("model", &GrapeTaskOptions::model,
            "the target base model: a Hugging Face model folder, or a model config file "
            "(Concord's or config.json)",
            opt::required())
        .field("weights", &GrapeTaskOptions::weights,
               "safetensors weights for a model config file (empty: fresh seeded weights)")
        .field("tokenizer", &GrapeTaskOptions::tokenizer,
               "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
        .field("pool", &GrapeTaskOptions::pool,
               "JSONL of {\"id\", \"instruction\", \"responses\": [{\"text\", \"source\"}]}",
               opt::required())
        .include(&GrapeTaskOptions::scoring, grape::score_options_schema())
        .include(&GrapeTaskOptions::selection, grape::select_options_schema(), {"seed"})
        .field("on_bad_record", &GrapeTaskOptions::on_bad_record,
               "a malformed pool line: stop with FILE:LINE, or skip it and list it in the report",
               opt::one_of({"stop", "skip"}))
        .field("device", &GrapeTaskOptions::device, "cpu, cuda, cuda:N or auto");
    return s;
  }();
  return schema;
}

}  // namespace

Task grape_task() {
  Task t;
  t.writes_rank_parts = true;
  t.summary = "GRAPE response selection: score every candidate response by the target model's "
              "mean log-probability per response token, keep the best per instruction";
  t.schema = [] { return grape_task_options_schema().config_schema(); };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const GrapeTaskOptions o = grape_task_options_schema().read(config);
    const std::string pool_path = o.pool;
    data::JsonlOptions jo;
    jo.on_bad = data::bad_record_policy_from_string(o.on_bad_record);
    data::BadRecords bad;
    const auto pools = data::read_grape_pools(pool_path, jo, &bad);
    CONCORD_CHECK(!pools.empty(), "grape: ", pool_path, " holds no valid pool",
                  bad.count > 0 ? " (" + bad.summary(pool_path) + ")" : std::string());

    grape::SelectOptions so = o.selection;
    so.seed = config["seed"].get<uint64_t>();
    std::set<std::string> sources;
    for (const auto& p : pools) {
      for (const auto& r : p.responses) sources.insert(r.source);
    }
    if (so.mode == "source") {
      CONCORD_CHECK(!so.source.empty(), "grape: mode 'source' needs 'source' (one of: ",
                    joined(sources), ")");
      CONCORD_CHECK(sources.count(so.source), "grape: source '", so.source, "' is not in ",
                    pool_path, " (sources: ", joined(sources), ")");
    }

    grape::GrapeScoreOptions go = o.scoring;
    // Launched as torchrun launches: each rank scores its share; whoever finds every part
    // merges and selects (core/shard.h).
    const Shard shard = process_shard();
    go.rank = shard.rank;
    go.world_size = shard.world_size;

    const std::string model_path = o.model;
    const auto device = select_device(o.device);
    auto model = load_model(model_path, o.weights, device, "grape");
    const auto tokenizer = text::load_tokenizer(tokenizer_path_for(model_path, o.tokenizer, "grape"));

    spdlog::info("grape: scoring {} pools on rank {} of {}", pools.size(), go.rank, go.world_size);
    grape::ScoreStats rank_stats;
    auto scores = grape::grape_score(model, *tokenizer, pools, go, &rank_stats);
    const double tokens_per_second =
        rank_stats.seconds > 0 ? static_cast<double>(rank_stats.response_tokens) / rank_stats.seconds : 0.0;
    spdlog::info("grape: {} candidates scored in {:.1f} s ({:.0f} response tokens/s)",
                 rank_stats.scored, rank_stats.seconds, tokens_per_second);
    const std::string prompt_example = grape::PromptRenderer(go.prompt_template, *tokenizer)
                                           .prompt_text(pools.front().instruction);
    report.paragraph("Target model `" + model_path + "`, pool `" + pool_path + "` (" +
                     std::to_string(pools.size()) + " pools), template:")
        .code(prompt_example + "<response>");
    if (bad.count > 0) {
      report.paragraph(bad.summary(pool_path) + ":");
      for (const auto& e : bad.examples) report.bullet(e);
      report.paragraph("");
    }

    if (go.world_size > 1) {
      const ShardParts parts(dir.path(), "scores.jsonl", go.world_size);
      grape::write_score_file(parts.path(go.rank), scores);
      if (!parts.complete()) {
        report.paragraph("Rank " + std::to_string(go.rank) + " of " +
                         std::to_string(go.world_size) + " wrote its part; `" +
                         parts.missing_names() +
                         "` is not there yet, so another rank merges and selects.");
        return;
      }
      scores = grape::merge_score_files(parts.paths(), static_cast<int64_t>(pools.size()));
    }
    grape::write_score_file(dir.file("scores.jsonl"), scores);
    // Only the rank that merges writes metrics: RunDirectory starts metrics.jsonl afresh when a
    // process first logs, so ranks logging one after another would erase each other's lines.
    const grape::ScoreStats totals = grape::summarize(scores);
    dir.metrics().log_json({{"step", 0},
                            {"grape/pools", totals.pools},
                            {"grape/candidates", totals.candidates},
                            {"grape/scored", totals.scored},
                            {"grape/skipped_too_long", totals.skipped_too_long},
                            {"grape/skipped_empty", totals.skipped_empty},
                            {"grape/deduplicated", totals.deduplicated},
                            {"grape/response_tokens", totals.response_tokens},
                            {"grape/bad_records", bad.count},
                            {"grape/world_size", go.world_size},
                            {"grape/rank_seconds", rank_stats.seconds},
                            {"grape/rank_response_tokens_per_second", tokens_per_second}});

    const auto selections = grape::select_responses(pools, scores, so);
    grape::write_selected_jsonl(dir.file("selected.jsonl"), pools, scores, selections);
    const auto summary = grape::make_selection_report(pools, scores, selections, so);
    Json selection = summary.to_json();
    selection["bad_records"] = bad.to_json();
    selection["scoring_options"] = go.to_json();
    selection["selection_options"] = so.to_json();
    write_file_atomic(dir.file("selection.json"), selection.dump(2) + "\n");
    dir.metrics().log_json({{"step", 1},
                            {"grape/selected", summary.selected},
                            {"grape/pools_without_selection", summary.pools_without},
                            {"grape/selected_score_mean", summary.selected_scores.mean},
                            {"grape/score_mean", summary.all_scores.mean}});

    report.heading("Selection");
    summary.add_to(report);
    report.paragraph("Scoring ran " + std::to_string(rank_stats.response_tokens) +
                     " response tokens in " + fixed(rank_stats.seconds, 1) + " s on rank " +
                     std::to_string(go.rank) + " (" + fixed(tokens_per_second, 0) +
                     " response tokens/s). Files: [scores.jsonl](scores.jsonl), "
                     "[selected.jsonl](selected.jsonl) (`sft` data), "
                     "[selection.json](selection.json).");
    for (const auto& [title, path] : summary.write_charts(dir.path())) report.image(title, path);
  };
  return t;
}

}  // namespace concord::tasks
