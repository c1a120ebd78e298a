// One PanGu-π training step (arXiv 2312.17276: SIAF Eq. 7 in the FFN, augmented shortcuts
// Eq. 4 beside the attention) with the fused ops against the same model on their composite
// ATen references (concord::ops::set_fused_ops_enabled(false)), measured in the same run from
// the same weights on the same batch: forward, next-token cross-entropy, backward, AdamW step,
// each as the trainer runs it (CausalLM::token_loss, train::AdamW), so the switch also moves the
// fused LM-head loss and the AdamW kernel to their composites.
//
//   bench_pangu_step [--config configs/models/tiny-pangu-pi.json] [--hidden 512] [--layers 4]
//                    [--heads 8] [--intermediate 1408] [--vocab 0 (the config's)] [--seq 256]
//                    [--batch 4] [--threads 2] [--iters 5]
//
// The config's architecture (SIAF terms, activation and neighbour kernel; shortcut paths and
// reduction) is kept and its sizes are replaced by the flags. The two sides alternate step by
// step, each on its own copy of the model and optimizer, so a change in machine load hits both
// alike. Prints one JSON line: median step times, their ratio composite / fused, tokens per
// second, and the first step's loss on each side (they must agree: same weights, same batch).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/ops/fused.h"
#include "concord/train/adamw.h"

#include "bench_flags.h"
#include "bench_timing.h"

using concord::bench::median;

namespace concord::bench {
std::string source_tree();  // pangu_step_paths.cpp
}  // namespace concord::bench

namespace {

struct Side {
  concord::lm::CausalLM model{nullptr};
  std::unique_ptr<concord::train::AdamW> optim;
  std::vector<double> times_ms;
  double first_loss = NAN;
};

double step(Side& s, const torch::Tensor& ids, bool fused) {
  concord::ops::FusedOpsGuard guard(fused);
  const auto t0 = std::chrono::steady_clock::now();
  s.optim->zero_grad();
  const int64_t T = ids.size(1);
  const torch::Tensor loss = s.model->token_loss(s.model->hidden_states(ids).narrow(1, 0, T - 1),
                                                 ids.narrow(1, 1, T - 1));
  loss.backward();
  s.optim->step();
  const auto t1 = std::chrono::steady_clock::now();
  if (std::isnan(s.first_loss)) s.first_loss = loss.item<double>();
  return std::chrono::duration<double, std::milli>(t1 - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = concord::bench::source_tree() + "/configs/models/tiny-pangu-pi.json";
  int64_t hidden = 512, layers = 4, heads = 8, intermediate = 1408, vocab = 0, seq = 256, batch = 4;
  int threads = 2, iters = 5;
  concord::bench::Flags flags("bench_pangu_step");
  flags.add("config", &config_path).add("hidden", &hidden).add("layers", &layers)
      .add("heads", &heads).add("intermediate", &intermediate).add("vocab", &vocab)
      .add("seq", &seq).add("batch", &batch).add("threads", &threads).add("iters", &iters);
  if (!flags.parse(argc, argv)) return 2;
  at::set_num_threads(threads);
  concord::lm::ModelConfig cfg = concord::lm::load_model_config(config_path);
  cfg.hidden_size = hidden;
  cfg.num_layers = layers;
  cfg.num_heads = heads;
  cfg.num_kv_heads = heads;
  cfg.head_dim = hidden / heads;
  cfg.intermediate_size = intermediate;
  if (vocab > 0) cfg.vocab_size = vocab;
  cfg.max_position_embeddings = std::max<int64_t>(cfg.max_position_embeddings, seq);
  cfg.validate("bench_pangu_step config");

  torch::manual_seed(0);
  Side fused, composite;
  fused.model = concord::lm::CausalLM(cfg);
  composite.model = std::dynamic_pointer_cast<concord::lm::CausalLMImpl>(fused.model->clone());
  // SIAF and the shortcuts start at the identity (a = [1, 0], FC2 = 0); move them off it so the
  // step exercises every term and gradient of both ops, identically on both sides.
  {
    torch::NoGradGuard g;
    torch::manual_seed(1);
    for (auto& p : fused.model->named_parameters()) {
      const std::string& name = p.key();
      if (name.find("siaf") != std::string::npos || name.find("shortcut") != std::string::npos) {
        p.value().add_(0.05 * torch::randn_like(p.value()));
      }
    }
    auto src = fused.model->named_parameters();
    for (auto& p : composite.model->named_parameters()) p.value().copy_(src[p.key()]);
  }
  auto make_adamw = [](concord::lm::CausalLM model) {
    std::vector<std::pair<std::string, at::Tensor>> named;
    for (const auto& p : model->named_parameters()) named.emplace_back(p.key(), p.value());
    concord::train::AdamWOptions o;
    o.lr = 3e-4;
    return std::make_unique<concord::train::AdamW>(std::move(named), o);
  };
  fused.optim = make_adamw(fused.model);
  composite.optim = make_adamw(composite.model);
  const torch::Tensor ids = torch::randint(cfg.vocab_size, {batch, seq}, torch::kLong);

  step(fused, ids, true);  // warm-up (first-touch of buffers, thread pool), not timed
  step(composite, ids, false);
  for (int i = 0; i < iters; ++i) {
    fused.times_ms.push_back(step(fused, ids, true));
    composite.times_ms.push_back(step(composite, ids, false));
  }
  const double f = median(fused.times_ms), c = median(composite.times_ms);
  const double tokens = static_cast<double>(batch * seq);
  std::printf(
      "{\"bench\": \"pangu_step\", \"hidden\": %lld, \"layers\": %lld, \"heads\": %lld, "
      "\"intermediate\": %lld, \"vocab\": %lld, \"siaf_terms\": %lld, \"shortcut_paths\": %lld, "
      "\"batch\": %lld, \"seq\": %lld, \"threads\": %d, \"iters\": %d, "
      "\"parameters\": %lld, \"composite_ms\": %.1f, \"fused_ms\": %.1f, \"ratio\": %.2f, "
      "\"composite_tok_s\": %.0f, \"fused_tok_s\": %.0f, \"first_loss_composite\": %.6f, "
      "\"first_loss_fused\": %.6f}\n",
      (long long)hidden, (long long)layers, (long long)heads, (long long)intermediate,
      (long long)cfg.vocab_size, (long long)cfg.siaf_terms, (long long)cfg.shortcut_paths,
      (long long)batch, (long long)seq, threads, iters,
      (long long)fused.model->num_parameters(), c, f, c / f, tokens / c * 1e3,
      tokens / f * 1e3, composite.first_loss, fused.first_loss);
  return 0;
}
