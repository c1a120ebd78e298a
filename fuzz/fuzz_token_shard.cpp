// libFuzzer target for pre-tokenised token shards (data::TokenShard, the CNCDTOK1 layout of
// include/concord/data/token_shard.h) and the pretraining data set over them
// (PretrainDataset::from_shards). The input is written into a scratch folder as a shard and
// mapped. A bad header or size must be refused with a concord::Error (one line, naming the file);
// a shard that opens must report exactly the tokens its payload holds, read every one (an id at or
// above the recorded vocabulary size is a FormatError naming the file), and give blocks of block
// size + 1 tokens whose targets are the inputs shifted by one. A crash, another exception, a
// sanitizer report (a read past the mapping) or a hang is a bug.
// Seeds: fuzz/corpus/token_shard (shards written by write_token_shard: uint16 and uint32 widths,
// with and without a recorded vocabulary size, empty).
// Build and run: scripts/fuzz.sh 60 fuzz_token_shard
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "concord/core/error.h"
#include "concord/data/pretrain.h"
#include "concord/data/token_shard.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;
namespace cd = concord::data;

namespace {

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

const fs::path& shard_path() {
  static const concord::fuzz::Scratch scratch("fuzz_token_shard");
  static const fs::path path = scratch.dir / "shard_000000.bin";
  return path;
}

void write(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();
}

void check_message(const concord::Error& e, const fs::path& path) {
  const std::string what = e.what();
  check(what.find('\n') == std::string::npos, "message spans lines:", what);
  check(what.find(path.string()) != std::string::npos, "message names no file:", what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& path = shard_path();
  write(path, std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    const cd::TokenShard shard(path);
    check(size >= cd::kTokenShardHeaderBytes, "a shard shorter than its header opened");
    check(shard.token_bytes() == 2 || shard.token_bytes() == 4, "bad width accepted");
    check(static_cast<uint64_t>(shard.size()) * shard.token_bytes() ==
              size - cd::kTokenShardHeaderBytes,
          "token count disagrees with the payload");
    check(shard.vocab_size() >= 0, "negative vocabulary size");
    std::vector<int64_t> tokens(static_cast<size_t>(shard.size()));
    shard.read(0, shard.size(), tokens.data());
    for (int64_t id : tokens) {
      check(id >= 0 && (shard.vocab_size() == 0 || id < shard.vocab_size()), "id out of range");
    }
    if (shard.size() > 0) check(shard.at(shard.size() - 1) == tokens.back(), "at() disagrees");
    // Ranges past the end are refused, never read.
    for (auto [begin, count] : {std::pair<int64_t, int64_t>{shard.size(), 1}, {-1, 1},
                                {0, shard.size() + 1}, {INT64_MAX, INT64_MAX}, {1, -1}}) {
      // Room for what a correct read would write; a read that is not refused writes `count`.
      std::vector<int64_t> sink(static_cast<size_t>(std::clamp<int64_t>(count, 0, shard.size() + 1)));
      bool refused = false;
      try {
        shard.read(begin, count, sink.data());
      } catch (const concord::Error&) {
        refused = true;
      }
      check(refused || (begin >= 0 && count >= 0 && begin + count <= shard.size()),
            "an out-of-range read was not refused");
    }
    for (int64_t block : {1, 3, 64}) {
      const auto set = cd::PretrainDataset::from_shards({path}, block);
      check(set.num_tokens() == shard.size(), "data set token count");
      check(set.size() == (shard.size() > 0 ? (shard.size() - 1) / block : 0), "block count");
      std::vector<int64_t> indices;
      for (int64_t i = 0; i < std::min<int64_t>(set.size(), 32); ++i) indices.push_back(i);
      if (indices.empty()) continue;
      const cd::LmBatch batch = set.get_batch(indices);
      check(batch.input_ids.size(1) == block, "batch width");
      // Block i is stream[i*T, i*T + T + 1): inputs and targets are the stream shifted by one.
      const int64_t* in = batch.input_ids.data_ptr<int64_t>();
      const int64_t* tg = batch.targets.data_ptr<int64_t>();
      for (size_t b = 0; b < indices.size(); ++b) {
        for (int64_t t = 0; t < block; ++t) {
          const size_t at = static_cast<size_t>(indices[b] * block + t);
          check(in[b * block + t] == tokens[at] && tg[b * block + t] == tokens[at + 1],
                "a block is not the stream");
        }
      }
    }
  } catch (const concord::Error& e) {
    check_message(e, path);
  }
  return 0;
}
