// Encode throughput of BpeTokenizer on one thread, for benchmarks/bench_tokenizer.py, which
// runs the Python `tokenizers` package on the same tokenizer.json and text in the same run and
// prints the ratio (the baseline is named there, not here).
//
//   bench_tokenizer TOKENIZER_JSON TEXT_FILE [--repeat N] [--ids-out FILE]
// TEXT_FILE holds one document per line (JSON-escaped strings, so documents keep their
// newlines). Prints one JSON object: bytes, documents, tokens, seconds (best of N passes after
// one warm-up pass, which fills the merge cache as the Python side's warm-up fills its own).
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "concord/text/bpe_tokenizer.h"

#include "bench_flags.h"

int main(int argc, char** argv) {
  int repeat = 3;
  std::string tokenizer_path, text_path, ids_out;
  concord::bench::Flags flags("bench_tokenizer");
  flags.positional("TOKENIZER_JSON", &tokenizer_path).positional("TEXT_FILE", &text_path)
      .add("repeat", &repeat).add("ids-out", &ids_out);
  if (!flags.parse(argc, argv)) return 2;
  try {
    auto tok = concord::text::BpeTokenizer::from_file(tokenizer_path);
    std::ifstream in(text_path, std::ios::binary);
    std::vector<std::string> docs;
    size_t bytes = 0;
    for (std::string line; std::getline(in, line);) {
      docs.push_back(nlohmann::json::parse(line).get<std::string>());
      bytes += docs.back().size();
    }
    std::vector<std::vector<concord::text::TokenId>> ids(docs.size());
    size_t tokens = 0;
    double best = 1e30;
    for (int pass = 0; pass <= repeat; ++pass) {
      const auto t0 = std::chrono::steady_clock::now();
      tokens = 0;
      for (size_t d = 0; d < docs.size(); ++d) {
        ids[d] = tok->encode(docs[d], false);
        tokens += ids[d].size();
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (pass > 0) best = std::min(best, s);  // pass 0 is the warm-up
    }
    if (!ids_out.empty()) {
      std::ofstream out(ids_out);
      for (const auto& v : ids) out << nlohmann::json(v).dump() << "\n";
    }
    nlohmann::json result = {{"bytes", bytes}, {"documents", docs.size()}, {"tokens", tokens},
                             {"seconds", best}, {"mb_per_s", bytes / best / 1e6}};
    std::cout << result.dump() << std::endl;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
