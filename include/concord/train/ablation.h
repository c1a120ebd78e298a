// PanGu-π's architecture ablation (arXiv 2312.17276, Table 5 / Sec. 5.1), in miniature: the same
// Llama-style model as Vanilla, with the series informed activation (SIAF, Eq. 7), with augmented
// shortcuts (AS, Eq. 4), and with both (PanGu-π), each trained from several seeds on the same
// data, then compared on
//   - validation loss (mean, sample standard deviation and 95% interval over seeds; each
//     variant's difference from Vanilla with Welch's interval),
//   - the per-layer feature diversity d_M(H) / ||H||_F (concord/lm/diversity.h), the quantity
//     the paper's nonlinearity-compensation argument is about,
//   - forward latency relative to Vanilla (the paper: SIAF+AS costs +4%, 7.56 -> 7.86 ms).
// Variants have equal size: each one's FFN width is chosen so its parameter count is the closest
// to the full PanGu-π model's, so a gain cannot come from extra parameters.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/core/statistics.h"
#include "concord/data/pretrain.h"
#include "concord/lm/diversity.h"
#include "concord/lm/model_config.h"
#include "concord/train/trainer.h"

namespace concord::train {

struct AblationVariant {
  std::string name;  ///< vanilla, siaf, as, siaf+as
  lm::ModelConfig config;
};

/// The named variants ("vanilla", "siaf", "as", "siaf+as") of a PanGu-π config (SIAF and AS
/// settings taken from it), FFN widths matched to the siaf+as model's parameter count.
std::vector<AblationVariant> pangu_ablation_variants(const lm::ModelConfig& pangu,
                                                     const std::vector<std::string>& names);

struct AblationOptions {
  TrainerOptions train;                  ///< the same for every variant and seed
  int64_t batch_size = 8;
  std::vector<uint64_t> seeds = {1, 2, 3};
  int64_t diversity_sequences = 32;      ///< validation blocks measured for d_M
  int64_t latency_batch = 1;             ///< forward latency on [batch, block] tokens
  int64_t latency_repeats = 20;          ///< timed forwards a round per variant (median)
  /// Rounds of the latency comparison. Every variant's seed-1 model is timed in each round, in
  /// one process after all training, on a fresh copy of its weights, the order alternating
  /// (A B, B A, ...); the figure is the median over rounds, the spread their range.
  int64_t latency_rounds = 5;
  /// When set, the first seed's model of each variant is saved to <folder>/<variant> as a
  /// Hugging Face folder (later stages evaluate it).
  std::filesystem::path save_models_to;
};

struct VariantResult {
  std::string name;
  int64_t parameters = 0;
  int64_t intermediate_size = 0;
  /// Validation loss over the seeds: per seed, mean, sd and the 95% interval of the mean.
  SeedSummary eval_loss;
  /// Last-layer relative diversity over the seeds (the layer the paper's argument is about).
  SeedSummary last_layer_diversity;
  std::vector<std::vector<std::pair<int64_t, double>>> train_loss;  ///< curve per seed
  std::vector<double> relative_diversity;                           ///< per layer, seed mean
  double latency_ms = 0;             ///< median over rounds of each round's median forward
  std::vector<double> latency_round_ms;  ///< each round's median forward
  double latency_ratio = 1;          ///< latency_ms / the first variant's
  std::vector<double> latency_round_ratios;  ///< each round's ratio to the first variant
  int64_t latency_threads = 0;       ///< intra-op threads while timing
  /// Forward FLOPs on the latency batch, estimated from the config (forward_flops).
  double forward_gflops = 0;
  nlohmann::json to_json() const;
};

/// Forward FLOPs of a causal LM on [rows, T] tokens, from its config: 2 per multiply-add of
/// every linear layer (attention projections, FFN, augmented-shortcut bottlenecks, LM head),
/// 2 * 2 * T^2 * heads * head_dim per layer for the attention scores and weighted sum (the whole
/// square, as causal kernels are conventionally counted), and the SIAF's elementwise series
/// (about 6 FLOPs per term per FFN activation: shift, activation, scale, add). An estimate
/// that shows where two variants' work differs, not a cycle count.
double forward_flops(const lm::ModelConfig& config, int64_t rows, int64_t T);

/// Trains every variant with every seed on `train` and evaluates on `eval` (all of it);
/// `on_run(variant, seed)` is called before each training run (progress reporting).
std::vector<VariantResult> run_ablation(
    const std::vector<AblationVariant>& variants, const data::PretrainDataset& train,
    const data::PretrainDataset& eval, const AblationOptions& options,
    const std::function<void(const std::string&, uint64_t)>& on_run = nullptr);

}  // namespace concord::train
