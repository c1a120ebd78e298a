#include "concord/train/ablation.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/train/batch.h"
#include "concord/train/next_token.h"

namespace concord::train {

namespace {

lm::ModelConfig with_parts(lm::ModelConfig c, bool siaf, bool shortcut, int64_t siaf_terms,
                           int64_t paths) {
  c.siaf_terms = siaf ? siaf_terms : 0;
  if (!siaf) c.siaf_neighbour_kernel = 0;
  c.shortcut_paths = shortcut ? paths : 0;
  c.family = siaf || shortcut ? lm::ModelFamily::PanGuPi : lm::ModelFamily::Llama;
  return c;
}

// The FFN width that brings count_parameters(c) closest to `target` (SwiGLU: 3 d I per layer).
// The count is affine in the width (SwiGLU's 3 d I per layer, SIAF's 2 n I), so two counts fix it.
lm::ModelConfig match_size(lm::ModelConfig c, int64_t target) {
  c.intermediate_size = 1;
  const int64_t at_one = lm::count_parameters(c);
  c.intermediate_size = 2;
  const int64_t per_unit = lm::count_parameters(c) - at_one;
  const int64_t base = at_one - per_unit;  // everything but the FFN width
  const double exact = static_cast<double>(target - base) / static_cast<double>(per_unit);
  c.intermediate_size = std::max<int64_t>(1, std::llround(exact));
  return c;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

double forward_latency_ms(lm::CausalLM model, const at::Tensor& ids, int64_t repeats) {
  c10::InferenceMode guard;
  model->eval();
  for (int i = 0; i < 3; ++i) (void)model->forward(ids);
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    (void)model->forward(ids);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(ms);
}

// The latency comparison: each round times every variant on a fresh copy of its weights (no
// allocator or cache state from training or the previous round), alternating the order so drift
// and warm-up favour no one.
void time_variants(std::vector<VariantResult>& results, const std::vector<lm::CausalLM>& models,
                   const at::Tensor& ids, const AblationOptions& options) {
  const size_t n = models.size();
  const int64_t rounds = std::max<int64_t>(1, options.latency_rounds);
  for (int64_t round = 0; round < rounds; ++round) {
    std::vector<size_t> order(n);
    for (size_t i = 0; i < n; ++i) order[i] = round % 2 == 0 ? i : n - 1 - i;
    for (size_t i : order) {
      lm::CausalLM copy(std::dynamic_pointer_cast<lm::CausalLMImpl>(models[i]->clone()));
      results[i].latency_round_ms.push_back(forward_latency_ms(copy, ids, options.latency_repeats));
    }
  }
  for (auto& r : results) {
    r.latency_ms = median(r.latency_round_ms);
    r.latency_threads = at::get_num_threads();
  }
  for (auto& r : results) {
    r.latency_ratio = r.latency_ms / results.front().latency_ms;
    for (size_t k = 0; k < r.latency_round_ms.size(); ++k) {
      r.latency_round_ratios.push_back(r.latency_round_ms[k] / results.front().latency_round_ms[k]);
    }
  }
}

}  // namespace

double forward_flops(const lm::ModelConfig& c, int64_t rows, int64_t T) {
  const double tokens = static_cast<double>(rows) * static_cast<double>(T);
  const double d = static_cast<double>(c.hidden_size);
  const double f = static_cast<double>(c.intermediate_size);
  const double q = static_cast<double>(c.num_heads * c.head_dim);
  const double kv = static_cast<double>(c.num_kv_heads * c.head_dim);
  double per_token = d * q + 2 * d * kv + q * d;      // q, k, v, o projections
  per_token += (c.gated_mlp ? 3 : 2) * d * f;         // FFN
  if (c.shortcut_paths > 0) {
    const double r = std::max<double>(1, std::ceil(d / static_cast<double>(c.shortcut_reduction)));
    per_token += static_cast<double>(c.shortcut_paths) * 2 * d * r;
  }
  double flops = 2 * tokens * per_token * static_cast<double>(c.num_layers);
  flops += 2 * tokens * d * static_cast<double>(c.vocab_size);  // LM head
  // Scores and weighted sum over the whole T x T square, per layer.
  flops += 4 * static_cast<double>(rows) * static_cast<double>(T) * static_cast<double>(T) * q *
           static_cast<double>(c.num_layers);
  if (c.siaf_terms > 0) {
    flops += 6 * static_cast<double>(c.siaf_terms) * tokens * f * static_cast<double>(c.num_layers);
  }
  return flops;
}

std::vector<AblationVariant> pangu_ablation_variants(const lm::ModelConfig& pangu,
                                                     const std::vector<std::string>& names) {
  CONCORD_CHECK(pangu.siaf_terms > 0 && pangu.shortcut_paths > 0,
                "ablation: the base config must have both SIAF (siaf.terms > 0) and augmented "
                "shortcuts (augmented_shortcut.paths > 0)");
  const lm::ModelConfig full =
      with_parts(pangu, true, true, pangu.siaf_terms, pangu.shortcut_paths);
  const int64_t target = lm::count_parameters(full);
  std::vector<AblationVariant> out;
  for (const auto& name : names) {
    bool siaf = false, shortcut = false;
    if (name == "vanilla") {
    } else if (name == "siaf") {
      siaf = true;
    } else if (name == "as") {
      shortcut = true;
    } else if (name == "siaf+as") {
      siaf = shortcut = true;
    } else {
      fail("ablation: unknown variant '", name, "' (valid: vanilla, siaf, as, siaf+as)");
    }
    lm::ModelConfig c = with_parts(pangu, siaf, shortcut, pangu.siaf_terms, pangu.shortcut_paths);
    if (!(siaf && shortcut)) c = match_size(c, target);
    c.validate("ablation variant " + name);
    out.push_back({name, c});
  }
  return out;
}

nlohmann::json VariantResult::to_json() const {
  nlohmann::json curves = nlohmann::json::array();
  for (const auto& curve : train_loss) {
    nlohmann::json c = nlohmann::json::array();
    for (const auto& [s, l] : curve) c.push_back({s, l});
    curves.push_back(c);
  }
  return {{"name", name},
          {"parameters", parameters},
          {"intermediate_size", intermediate_size},
          {"eval_loss", eval_loss.to_json()},
          {"last_layer_diversity", last_layer_diversity.to_json()},
          {"relative_diversity", relative_diversity},
          {"latency_ms", latency_ms},
          {"latency_round_ms", latency_round_ms},
          {"latency_ratio", latency_ratio},
          {"latency_round_ratios", latency_round_ratios},
          {"latency_threads", latency_threads},
          {"forward_gflops", forward_gflops},
          {"train_loss", curves}};
}

std::vector<VariantResult> run_ablation(
    const std::vector<AblationVariant>& variants, const data::PretrainDataset& train,
    const data::PretrainDataset& eval, const AblationOptions& options,
    const std::function<void(const std::string&, uint64_t)>& on_run) {
  CONCORD_CHECK(!variants.empty() && !options.seeds.empty(), "ablation: no variants or no seeds");
  CONCORD_CHECK(train.size() > 0 && eval.size() > 0, "ablation: empty training or validation data");
  std::vector<VariantResult> results;
  // The same validation blocks for every variant: the first ones, in order.
  std::vector<std::vector<int64_t>> diversity_seqs;
  for (int64_t i = 0; i < std::min(options.diversity_sequences, eval.size()); ++i) {
    auto b = eval.block(i);
    b.pop_back();  // the inputs of the block
    diversity_seqs.push_back(std::move(b));
  }
  const int64_t lat_rows = std::min(options.latency_batch, eval.size());
  std::vector<int64_t> lat_index(static_cast<size_t>(lat_rows));
  for (int64_t i = 0; i < lat_rows; ++i) lat_index[static_cast<size_t>(i)] = i;
  const at::Tensor latency_ids = eval.get_batch(lat_index).input_ids;

  std::vector<lm::CausalLM> timed;  // each variant's seed-1 model
  for (const auto& variant : variants) {
    VariantResult r;
    r.name = variant.name;
    r.forward_gflops = forward_flops(variant.config, latency_ids.size(0), latency_ids.size(1)) / 1e9;
    r.parameters = lm::count_parameters(variant.config);
    r.intermediate_size = variant.config.intermediate_size;
    std::vector<std::vector<double>> diversity;
    std::vector<double> eval_loss;
    for (size_t s = 0; s < options.seeds.size(); ++s) {
      const uint64_t seed = options.seeds[s];
      if (on_run) on_run(variant.name, seed);
      seed_everything(seed);
      lm::CausalLM model(variant.config);
      data::SamplerOptions sampling;
      sampling.batch_size = options.batch_size;
      sampling.seed = seed;
      SampledBatches<data::PretrainDataset> train_batches(train, sampling);
      data::SamplerOptions in_order;
      in_order.batch_size = options.batch_size;
      in_order.shuffle = false;
      SampledBatches<data::PretrainDataset> eval_batches(eval, in_order);
      TrainerOptions to = options.train;
      to.eval_every = 0;  // one evaluation, at the end (eval_batches as configured)
      Trainer trainer({{"model", model.ptr()}}, to);
      NextTokenObjective objective(model);
      const TrainResult tr = trainer.fit(objective, train_batches, &eval_batches, nullptr);
      eval_loss.push_back(*tr.final_eval_loss);
      r.train_loss.push_back(tr.train_loss);
      lm::DiversityOptions dopt;
      dopt.batch_size = options.batch_size;
      diversity.push_back(lm::layer_diversity(model, diversity_seqs, dopt).relative);
      if (s == 0) {
        timed.push_back(model);
        if (!options.save_models_to.empty()) {
          lm::save_pretrained(model, options.save_models_to / variant.name);
        }
      }
    }
    r.eval_loss = summarize_over_seeds(eval_loss, options.seeds);
    std::vector<double> last;
    for (const auto& d : diversity) last.push_back(d.back());
    r.last_layer_diversity = summarize_over_seeds(last, options.seeds);
    r.relative_diversity.assign(diversity[0].size(), 0.0);
    for (const auto& d : diversity) {
      for (size_t l = 0; l < d.size(); ++l) r.relative_diversity[l] += d[l] / static_cast<double>(diversity.size());
    }
    results.push_back(std::move(r));
  }
  time_variants(results, timed, latency_ids, options);
  return results;
}

}  // namespace concord::train
