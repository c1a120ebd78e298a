#include "stage_pretrain.h"

#include <fmt/format.h>

#include <algorithm>

#include "ablation_report.h"
#include "concord/core/config.h"
#include "concord/core/statistics.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/pretrain.h"
#include "concord/lm/model_config.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/train/ablation.h"

namespace concord::tasks {

namespace {

// Byte-level vocabulary; PanGu-π's paper settings where they fit a model this small: n = 2 SiLU
// terms, one shortcut path with reduction r = 16 (the paper's r = 32 would leave a width-4
// bottleneck at d = 128).
constexpr const char* kTinyPanGu = R"({
  "family": "pangu_pi", "vocab_size": 257, "hidden_size": 128, "num_layers": 4,
  "num_heads": 4, "num_kv_heads": 4, "intermediate_size": 320, "max_position_embeddings": 256,
  "bos_token_id": 256, "eos_token_id": 256, "pad_token_id": 256,
  "siaf": {"terms": 2, "activation": "silu"},
  "augmented_shortcut": {"paths": 1, "reduction": 16}})";

}  // namespace

Stage pretrain_stage(QuickstartSize size) {
  Stage s;
  s.name = "pretrain";
  s.what = "pretrain a tiny PanGu-pi and an equal-size Vanilla model on built-in text, same data "
           "and seeds; losses, latency and the per-layer diversity measure";
  s.shows = "whether SIAF + augmented shortcuts change validation loss at equal size (the paper: "
            "lower) and what they cost in forward time (the paper: +4%)";
  s.run = [size](RunDirectory& dir) {
    const bool smoke = size == QuickstartSize::smoke, full = size == QuickstartSize::full;
    const int64_t documents = smoke ? 200 : 3000;
    const int64_t block = 64;
    train::AblationOptions o;
    o.batch_size = 16;
    o.seeds = smoke ? std::vector<uint64_t>{1} : full ? std::vector<uint64_t>{1, 2, 3}
                                                      : std::vector<uint64_t>{1, 2};
    o.train.max_steps = smoke ? 8 : full ? 200 : 150;
    o.train.optimizer.lr = 3e-3;
    o.train.warmup_steps = smoke ? 2 : o.train.max_steps / 10;
    o.train.progress = false;
    o.diversity_sequences = 32;
    o.latency_batch = 4;
    o.latency_repeats = smoke ? 3 : 20;
    o.latency_rounds = smoke ? 3 : 5;
    o.save_models_to = dir.file("models");
    dir.write_config({{"stage", "pretrain"},
                      {"model", parse_json(kTinyPanGu, "quickstart model")},
                      {"documents", documents},
                      {"block_size", block},
                      {"batch_size", o.batch_size},
                      {"seeds", o.seeds},
                      {"train", o.train.to_json()}});

    const text::ByteTokenizer tokenizer;
    // Training and validation text are disjoint draws of the same generator.
    const auto train = data::PretrainDataset::from_texts(data::builtin_corpus(documents, 1234),
                                                         tokenizer, block);
    const auto eval = data::PretrainDataset::from_texts(
        data::builtin_corpus(smoke ? 20 : 200, 4321), tokenizer, block);
    const lm::ModelConfig pangu =
        lm::model_config_from_json(parse_json(kTinyPanGu, "quickstart model"), "quickstart model");
    const auto variants = train::pangu_ablation_variants(pangu, {"vanilla", "siaf+as"});
    const auto results = train::run_ablation(variants, train, eval, o);

    Report report("quickstart: pretrain");
    report.paragraph(fmt::format(
        "A Vanilla (Llama-style) model and a PanGu-π model (SIAF, Eq. 7, in the FFN and an "
        "augmented shortcut, Eq. 4, beside each attention) of equal size, trained {} steps of "
        "{} x {} byte tokens on {} built-in documents with the same seeds ({}) and data order, "
        "validated on {} blocks of other documents.",
        o.train.max_steps, o.batch_size, block, documents, o.seeds.size(), eval.size()));
    report_ablation(results, dir, report);
    report.write(dir.file("report.md"));
    const auto& v = results[0];
    const auto& p = results[1];
    const auto [lo, hi] = std::minmax_element(p.latency_round_ratios.begin(), p.latency_round_ratios.end());
    // Both variants see the same data order and initial seed: the paired difference.
    const MeanDifference d = paired_difference(p.eval_loss, v.eval_loss);
    return fmt::format("validation loss over {} seed(s): Vanilla {:.3f}, PanGu-pi {:.3f}; {}; "
                       "last-layer diversity {:.3f} vs {:.3f}; PanGu-pi forward {:.2f}x Vanilla's "
                       "time (median of {} interleaved rounds, range {:.2f}-{:.2f}x, {} thread(s); "
                       "{:.2f}x its FLOPs)",
                       o.seeds.size(), v.eval_loss.mean, p.eval_loss.mean,
                       describe_difference("PanGu-pi", "Vanilla", d, 3, " nats"),
                       v.relative_diversity.back(), p.relative_diversity.back(), p.latency_ratio,
                       p.latency_round_ratios.size(), *lo, *hi, p.latency_threads,
                       p.forward_gflops / v.forward_gflops);
  };
  return s;
}

}  // namespace concord::tasks
