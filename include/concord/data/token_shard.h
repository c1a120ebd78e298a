// Pre-tokenised token shards: a flat array of token ids behind a 32-byte header, read through
// a memory map (concord::MappedFile) so a corpus larger than RAM trains without loading.
// Layout (all integers little-endian; docs/data.md has the full description):
//
//   offset  size  field
//        0     8  magic "CNCDTOK1"
//        8     4  version (uint32) = 1
//       12     4  bytes per token (uint32): 2 = uint16, 4 = uint32
//       16     8  number of tokens N (uint64)
//       24     8  vocabulary size V (uint64); every id is < V; 0 = not recorded
//       32   N*b  token ids
//
// A file whose size is not exactly 32 + N*b, a bad magic, an unknown version or width is
// rejected with a FormatError that names the file and says which.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "concord/core/files.h"
#include "concord/text/tokenizer.h"

namespace concord::data {

inline constexpr char kTokenShardMagic[8] = {'C', 'N', 'C', 'D', 'T', 'O', 'K', '1'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr size_t kTokenShardHeaderBytes = 32;

/// A read-only, memory-mapped shard.
class TokenShard {
 public:
  /// Maps `path` and checks the header and size (O(1): ids are checked where they are read).
  explicit TokenShard(const std::filesystem::path& path);

  int64_t size() const { return num_tokens_; }
  int64_t vocab_size() const { return vocab_size_; }
  int token_bytes() const { return token_bytes_; }
  const std::filesystem::path& path() const { return file_.path(); }

  /// Token `i` (0 <= i < size(), checked).
  int64_t at(int64_t i) const;
  /// Copies tokens [begin, begin + count) into `out` as int64, checking each id against the
  /// vocabulary size recorded in the header (a FormatError names the file and token offset).
  void read(int64_t begin, int64_t count, int64_t* out) const;

 private:
  MappedFile file_;
  const uint8_t* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
  int64_t vocab_size_ = 0;
  int token_bytes_ = 0;
};

/// Writes `ids` as a shard through concord::write_file_atomic. The width is uint16 when every
/// id fits (vocab_size <= 65536), else uint32; `vocab_size` > 0 is recorded and every id must be
/// below it; negative ids are refused.
void write_token_shard(const std::filesystem::path& path, const std::vector<text::TokenId>& ids,
                       int64_t vocab_size);

/// Streams a JSONL file of {"text"} records through `tokenizer` into shards
/// `<prefix>_000000.bin`, `<prefix>_000001.bin`, ... of at most `tokens_per_shard` tokens each,
/// appending the EOS id after every document. Memory stays at one shard. Returns the paths.
std::vector<std::filesystem::path> tokenize_jsonl_to_shards(const std::filesystem::path& jsonl,
                                                            const text::Tokenizer& tokenizer,
                                                            const std::string& prefix,
                                                            int64_t tokens_per_shard);

}  // namespace concord::data
