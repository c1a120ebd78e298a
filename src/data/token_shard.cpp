#include "concord/data/token_shard.h"

#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>

#include "concord/core/error.h"
#include "concord/data/records.h"

namespace fs = std::filesystem;

namespace concord::data {

namespace {

// Shards are little-endian on disk; every platform LibTorch supports is too, so reading is a
// memcpy. Checked once so a big-endian port fails loudly instead of reading garbage.
bool host_is_little_endian() {
  const uint16_t one = 1;
  uint8_t first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void store(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

std::string header_bytes(uint32_t token_bytes, uint64_t n, uint64_t vocab) {
  std::string h(kTokenShardMagic, sizeof(kTokenShardMagic));
  store<uint32_t>(h, kTokenShardVersion);
  store<uint32_t>(h, token_bytes);
  store<uint64_t>(h, n);
  store<uint64_t>(h, vocab);
  return h;
}

}  // namespace

TokenShard::TokenShard(const fs::path& path) : file_(path) {
  CONCORD_CHECK(host_is_little_endian(), "token shards need a little-endian host");
  const std::string name = path.string();
  const uint8_t* p = file_.data();
  size_t size = file_.size();
  if (size < kTokenShardHeaderBytes) {
    fail_format(name, "truncated token shard: ", size, " bytes, the header alone is ",
                kTokenShardHeaderBytes);
  }
  if (std::memcmp(p, kTokenShardMagic, sizeof(kTokenShardMagic)) != 0) {
    fail_format(name, "not a token shard (bad magic at byte 0; expected \"CNCDTOK1\")");
  }
  auto version = load<uint32_t>(p + 8);
  if (version != kTokenShardVersion) {
    fail_format(name, "token shard version ", version, " is not supported (this build reads ",
                kTokenShardVersion, ")");
  }
  auto width = load<uint32_t>(p + 12);
  if (width != 2 && width != 4) {
    fail_format(name, "bytes per token at byte 12 is ", width, " (valid: 2 = uint16, 4 = uint32)");
  }
  auto n = load<uint64_t>(p + 16);
  auto vocab = load<uint64_t>(p + 24);
  uint64_t payload = size - kTokenShardHeaderBytes;
  // Compare by division so a hostile N cannot overflow N * width.
  if (n > payload / width || payload != n * width) {
    if (n > payload / width) {
      fail_format(name, "truncated token shard: header says ", n, " tokens (", n, " x ", width,
                  " bytes) but only ", payload, " bytes follow the header");
    }
    fail_format(name, "token shard has ", payload - n * width,
                " trailing bytes after its ", n, " tokens");
  }
  if (vocab > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    fail_format(name, "vocabulary size ", vocab, " at byte 24 is out of range");
  }
  tokens_ = p + kTokenShardHeaderBytes;
  num_tokens_ = static_cast<int64_t>(n);
  vocab_size_ = static_cast<int64_t>(vocab);
  token_bytes_ = static_cast<int>(width);
}

int64_t TokenShard::at(int64_t i) const {
  CONCORD_CHECK(i >= 0 && i < num_tokens_, path().string(), ": token index ", i,
                " out of range [0, ", num_tokens_, ")");
  int64_t v;
  read(i, 1, &v);
  return v;
}

void TokenShard::read(int64_t begin, int64_t count, int64_t* out) const {
  // The message gives begin and count, not begin + count: a hostile pair would overflow it.
  CONCORD_CHECK(begin >= 0 && count >= 0 && begin <= num_tokens_ - count, path().string(),
                ": ", count, " tokens from index ", begin, " are out of range [0, ", num_tokens_,
                ")");
  const uint8_t* p = tokens_ + begin * token_bytes_;
  if (token_bytes_ == 2) {
    for (int64_t i = 0; i < count; ++i) out[i] = load<uint16_t>(p + 2 * i);
  } else {
    for (int64_t i = 0; i < count; ++i) out[i] = load<uint32_t>(p + 4 * i);
  }
  if (vocab_size_ > 0) {
    for (int64_t i = 0; i < count; ++i) {
      if (out[i] >= vocab_size_) {
        fail_format(path().string(), "token ", out[i], " at index ", begin + i,
                    " is not below the vocabulary size ", vocab_size_);
      }
    }
  }
}

void write_token_shard(const fs::path& path, const std::vector<text::TokenId>& ids,
                       int64_t vocab_size) {
  CONCORD_CHECK(vocab_size >= 0, "write_token_shard: negative vocabulary size ", vocab_size);
  int64_t largest = -1;
  for (size_t i = 0; i < ids.size(); ++i) {
    CONCORD_CHECK(ids[i] >= 0, path.string(), ": token ", ids[i], " at index ", i, " is negative");
    CONCORD_CHECK(vocab_size == 0 || ids[i] < vocab_size, path.string(), ": token ", ids[i],
                  " at index ", i, " is not below the vocabulary size ", vocab_size);
    largest = std::max<int64_t>(largest, ids[i]);
  }
  bool narrow = vocab_size > 0 ? vocab_size <= 65536 : largest < 65536;
  uint32_t width = narrow ? 2 : 4;
  write_file_atomic(path, [&](std::ostream& out) {
    std::string h = header_bytes(width, ids.size(), static_cast<uint64_t>(vocab_size));
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    std::string buf;
    buf.reserve(size_t{1} << 20);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (narrow) store<uint16_t>(buf, static_cast<uint16_t>(ids[i]));
      else store<uint32_t>(buf, static_cast<uint32_t>(ids[i]));
      if (buf.size() >= (size_t{1} << 20)) {
        out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
        buf.clear();
      }
    }
    out.write(buf.data(), static_cast<std::streamsize>(buf.size()));
  });
}

std::vector<fs::path> tokenize_jsonl_to_shards(const fs::path& jsonl,
                                               const text::Tokenizer& tokenizer,
                                               const std::string& prefix,
                                               int64_t tokens_per_shard) {
  CONCORD_CHECK(tokens_per_shard > 0, "tokens_per_shard must be positive, got ",
                tokens_per_shard);
  auto eos = tokenizer.eos_id();
  CONCORD_CHECK(eos.has_value(), "tokenize_jsonl_to_shards: the tokenizer has no EOS token");
  std::vector<fs::path> written;
  std::vector<text::TokenId> buffer;
  auto flush = [&] {
    std::ostringstream name;
    name << prefix << "_" << std::setw(6) << std::setfill('0') << written.size() << ".bin";
    write_token_shard(name.str(), buffer, tokenizer.vocab_size());
    written.emplace_back(name.str());
    buffer.clear();
  };
  JsonlReader reader(jsonl);
  reader.for_each([&](const nlohmann::json& object, const RecordLocation& loc) {
    TextRecord r = parse_text_record(object, loc);
    std::vector<text::TokenId> ids = tokenizer.encode(r.text, false);
    ids.push_back(*eos);
    for (text::TokenId id : ids) {
      buffer.push_back(id);
      if (static_cast<int64_t>(buffer.size()) == tokens_per_shard) flush();
    }
  });
  if (!buffer.empty() || written.empty()) flush();
  return written;
}

}  // namespace concord::data
