// GRAPE scoring throughput (response tokens per second) of grape_score, for
// benchmarks/bench_grape_score.py, which scores the same pool with transformers on the same
// model in the same run, compares the scores and prints the ratio (the baseline is named there).
//
//   bench_grape_score MODEL_DIR TOKENIZER POOL_JSONL [--batch-size N] [--repeat N]
//                     [--share-prompt 0|1] [--template T] [--scores-out FILE]
// Prints one JSON object: pools, candidates, response_tokens, prompt_tokens, seconds (best of
// N passes after a warm-up pass over the first 4 pools), tokens_per_s, threads.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include <ATen/Parallel.h>

#include "concord/core/runtime.h"
#include "concord/data/grape_pool.h"
#include "concord/grape/score.h"
#include "concord/lm/hf_checkpoint.h"
#include "concord/text/tokenizer.h"

#include "bench_flags.h"

int main(int argc, char** argv) {
  concord::grape::GrapeScoreOptions options;
  int repeat = 1;
  std::string model_dir, tokenizer_path, pool_path, scores_out;
  concord::bench::Flags flags("bench_grape_score");
  flags.positional("MODEL_DIR", &model_dir).positional("TOKENIZER", &tokenizer_path)
      .positional("POOL_JSONL", &pool_path).add("batch-size", &options.batch_size)
      .add("repeat", &repeat).add("share-prompt", &options.share_prompt)
      .add("template", &options.prompt_template).add("scores-out", &scores_out);
  if (!flags.parse(argc, argv)) return 2;
  try {
    concord::init_runtime();
    auto model = concord::lm::load_pretrained(model_dir);
    auto tokenizer = concord::text::load_tokenizer(tokenizer_path);
    const auto pools = concord::data::read_grape_pools(pool_path);
    std::vector<concord::grape::PoolScores> scores;
    concord::grape::ScoreStats stats;
    // Warm-up on the first few pools (thread pool start, first touch of the weights).
    const std::vector<concord::data::GrapePool> warm(pools.begin(),
                                                    pools.begin() + std::min<size_t>(4, pools.size()));
    concord::grape::grape_score(model, *tokenizer, warm, options);
    double best = 1e30;
    for (int pass = 0; pass < repeat; ++pass) {
      scores = concord::grape::grape_score(model, *tokenizer, pools, options, &stats);
      best = std::min(best, stats.seconds);
    }
    if (!scores_out.empty()) concord::grape::write_score_file(scores_out, scores);
    const nlohmann::json result = {{"pools", stats.pools},
                                   {"candidates", stats.candidates},
                                   {"scored", stats.scored},
                                   {"response_tokens", stats.response_tokens},
                                   {"prompt_tokens", stats.prompt_tokens},
                                   {"seconds", best},
                                   {"tokens_per_s", stats.response_tokens / best},
                                   {"threads", at::get_num_threads()}};
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_grape_score: %s\n", e.what());
    return 1;
  }
  return 0;
}
