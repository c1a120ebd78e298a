#include "task_grape.h"

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/logging.h"
#include "concord/core/runtime.h"
#include "concord/data/grape_pool.h"
#include "concord/data/jsonl.h"
#include "concord/grape/score.h"
#include "concord/grape/select.h"
#include "concord/text/tokenizer.h"
#include "concord/tasks/model_loading.h"

namespace concord::tasks {

namespace {

namespace fs = std::filesystem;

std::string joined(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + (n.empty() ? "(none)" : n);
  return out;
}

}  // namespace

Task grape_task() {
  Task t;
  t.summary = "GRAPE response selection: score every candidate response by the target model's "
              "mean log-probability per response token, keep the best per instruction";
  t.schema = [] {
    std::string modes = grape::selection_modes().joined_names();
    ConfigSchema s;
    s.required("model", ConfigType::String,
               "the target base model: a Hugging Face model folder, or a model config file "
               "(Concord's or config.json)")
        .optional("weights", ConfigType::String, "",
                  "safetensors weights for a model config file (empty: fresh seeded weights)")
        .optional("tokenizer", ConfigType::String, "",
                  "tokenizer.json, .model, a folder, or 'bytes' (default: the model folder)")
        .required("pool", ConfigType::String,
                  "JSONL of {\"id\", \"instruction\", \"responses\": [{\"text\", \"source\"}]}")
        .optional("template", ConfigType::String, grape::kPaperTemplate,
                  "prompt format with {instruction}, or a chat template name (plain, chatml, "
                  "llama2: scores exactly the tokens sft trains on)")
        .choice("mode", grape::selection_modes().names(), "grape", "selection: " + modes)
        .optional("top_k", ConfigType::Int, 1,
                  "responses kept per instruction (grape, reverse, random, longest)")
        .optional("source", ConfigType::String, "", "the source kept by mode 'source'")
        .optional("max_length", ConfigType::Int, 0,
                  "longest prompt + response scored, in tokens; longer candidates are skipped "
                  "and counted (0: the model's context)")
        .optional("batch_size", ConfigType::Int, 16, "responses per forward pass")
        .optional("share_prompt", ConfigType::Bool, true,
                  "run each instruction's prompt once into a KV cache for all of its responses "
                  "(false: every pair on its own, faster when the LM head dominates)")
        .optional("dedup", ConfigType::Bool, true, "score identical responses of a pool once")
        .choice("on_bad_record", {"stop", "skip"}, "stop",
                "a malformed pool line: stop with FILE:LINE, or skip it and list it in the report")
        .optional("device", ConfigType::String, "cpu", "cpu, cuda, cuda:N or auto");
    return s;
  };
  t.run = [](const Json& config, RunDirectory& dir, Report& report) {
    const std::string pool_path = config["pool"].get<std::string>();
    data::JsonlOptions jo;
    jo.on_bad = data::bad_record_policy_from_string(config["on_bad_record"].get<std::string>());
    data::BadRecords bad;
    const auto pools = data::read_grape_pools(pool_path, jo, &bad);
    CONCORD_CHECK(!pools.empty(), "grape: ", pool_path, " holds no valid pool",
                  bad.count > 0 ? " (" + bad.summary(pool_path) + ")" : std::string());

    grape::SelectOptions so;
    so.mode = config["mode"].get<std::string>();
    so.top_k = config["top_k"].get<int64_t>();
    so.source = config["source"].get<std::string>();
    so.seed = config["seed"].get<uint64_t>();
    CONCORD_CHECK(so.top_k >= 1, "grape: top_k must be >= 1, got ", so.top_k);
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

    grape::GrapeScoreOptions go;
    go.prompt_template = config["template"].get<std::string>();
    go.max_length = config["max_length"].get<int64_t>();
    go.batch_size = config["batch_size"].get<int64_t>();
    go.share_prompt = config["share_prompt"].get<bool>();
    go.dedup = config["dedup"].get<bool>();
    // Launched as torchrun launches: each rank scores its share; whoever finds every part
    // merges and selects.
    go.rank = process_rank();
    go.world_size = process_world_size();
    CONCORD_CHECK(go.batch_size > 0, "grape: batch_size must be > 0, got ", go.batch_size);
    CONCORD_CHECK(go.max_length >= 0, "grape: max_length must be >= 0, got ", go.max_length);

    const std::string model_path = config["model"].get<std::string>();
    const auto device = select_device(config["device"].get<std::string>());
    auto model = load_model(model_path, config["weights"].get<std::string>(), device, "grape");
    const auto tokenizer = text::load_tokenizer(
        tokenizer_path_for(model_path, config["tokenizer"].get<std::string>(), "grape"));

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
      grape::write_score_file(dir.file(grape::score_shard_name(go.rank, go.world_size)), scores);
      std::vector<fs::path> parts;
      for (int64_t r = 0; r < go.world_size; ++r) {
        parts.push_back(dir.file(grape::score_shard_name(r, go.world_size)));
      }
      for (const auto& p : parts) {
        if (!fs::exists(p)) {
          report.paragraph("Rank " + std::to_string(go.rank) + " of " +
                           std::to_string(go.world_size) + " wrote its part; `" +
                           p.filename().string() +
                           "` is not there yet, so another rank merges and selects.");
          return;
        }
      }
      scores = grape::merge_score_files(parts, static_cast<int64_t>(pools.size()));
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
