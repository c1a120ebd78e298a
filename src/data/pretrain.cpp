#include "concord/data/pretrain.h"

#include "concord/core/error.h"
#include "concord/data/records.h"
#include "concord/data/token_shard.h"

namespace fs = std::filesystem;

namespace concord::data {

struct PretrainDataset::Source {
  virtual ~Source() = default;
  virtual int64_t size() const = 0;
  virtual void read(int64_t begin, int64_t count, int64_t* out) const = 0;
  virtual std::string describe() const = 0;
};

namespace {

struct MemorySource final : PretrainDataset::Source {
  std::vector<text::TokenId> tokens;
  int64_t size() const override { return static_cast<int64_t>(tokens.size()); }
  void read(int64_t begin, int64_t count, int64_t* out) const override {
    for (int64_t i = 0; i < count; ++i) out[i] = tokens[static_cast<size_t>(begin + i)];
  }
  std::string describe() const override { return "memory"; }
};

struct ShardSource final : PretrainDataset::Source {
  explicit ShardSource(const fs::path& path) : shard(path) {}
  TokenShard shard;
  int64_t size() const override { return shard.size(); }
  void read(int64_t begin, int64_t count, int64_t* out) const override {
    shard.read(begin, count, out);
  }
  std::string describe() const override { return shard.path().string(); }
};

void check_block_size(int64_t block_size) {
  CONCORD_CHECK(block_size > 0, "block_size must be positive, got ", block_size);
}

void append_document(std::vector<text::TokenId>& stream, const text::Tokenizer& tokenizer,
                     const std::string& text, text::TokenId eos) {
  std::vector<text::TokenId> ids = tokenizer.encode(text, false);
  stream.insert(stream.end(), ids.begin(), ids.end());
  stream.push_back(eos);
}

text::TokenId require_eos(const text::Tokenizer& tokenizer) {
  auto eos = tokenizer.eos_id();
  CONCORD_CHECK(eos.has_value(), "PretrainDataset: the tokenizer has no EOS token to separate "
                "documents");
  return *eos;
}

}  // namespace

PretrainDataset::PretrainDataset(std::vector<std::shared_ptr<const Source>> sources,
                                 int64_t block_size)
    : sources_(std::move(sources)), block_size_(block_size) {
  check_block_size(block_size);
  int64_t total = 0;
  for (const auto& s : sources_) {
    total += s->size() > 0 ? (s->size() - 1) / block_size : 0;
    offsets_.push_back(total);
  }
}

PretrainDataset PretrainDataset::from_tokens(std::vector<text::TokenId> tokens,
                                             int64_t block_size) {
  auto src = std::make_shared<MemorySource>();
  src->tokens = std::move(tokens);
  return PretrainDataset({src}, block_size);
}

PretrainDataset PretrainDataset::from_texts(const std::vector<std::string>& documents,
                                            const text::Tokenizer& tokenizer,
                                            int64_t block_size) {
  check_block_size(block_size);
  text::TokenId eos = require_eos(tokenizer);
  std::vector<text::TokenId> stream;
  for (const auto& d : documents) append_document(stream, tokenizer, d, eos);
  return from_tokens(std::move(stream), block_size);
}

PretrainDataset PretrainDataset::from_jsonl(const fs::path& jsonl,
                                            const text::Tokenizer& tokenizer, int64_t block_size,
                                            const JsonlOptions& options, BadRecords* bad) {
  check_block_size(block_size);
  text::TokenId eos = require_eos(tokenizer);
  std::vector<text::TokenId> stream;
  JsonlReader reader(jsonl, options);
  reader.for_each([&](const nlohmann::json& object, const RecordLocation& loc) {
    append_document(stream, tokenizer, parse_text_record(object, loc).text, eos);
  });
  if (bad) *bad = reader.bad_records();
  return from_tokens(std::move(stream), block_size);
}

PretrainDataset PretrainDataset::from_shards(const std::vector<fs::path>& shards,
                                             int64_t block_size) {
  CONCORD_CHECK(!shards.empty(), "PretrainDataset::from_shards: no shard files given");
  std::vector<std::shared_ptr<const Source>> sources;
  for (const auto& p : shards) sources.push_back(std::make_shared<ShardSource>(p));
  return PretrainDataset(std::move(sources), block_size);
}

int64_t PretrainDataset::num_tokens() const {
  int64_t n = 0;
  for (const auto& s : sources_) n += s->size();
  return n;
}

void PretrainDataset::read_block(int64_t i, int64_t* out) const {
  CONCORD_CHECK(i >= 0 && i < size(), "PretrainDataset: block ", i, " out of range [0, ", size(),
                ")");
  auto k = static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), i) -
                               offsets_.begin());
  int64_t local = i - (k == 0 ? 0 : offsets_[k - 1]);
  sources_[k]->read(local * block_size_, block_size_ + 1, out);
}

std::vector<int64_t> PretrainDataset::block(int64_t i) const {
  std::vector<int64_t> out(static_cast<size_t>(block_size_ + 1));
  read_block(i, out.data());
  return out;
}

LmBatch PretrainDataset::get_batch(const std::vector<int64_t>& indices) const {
  auto B = static_cast<int64_t>(indices.size());
  int64_t T = block_size_;
  at::Tensor inputs = at::empty({B, T}, at::kLong);
  at::Tensor targets = at::empty({B, T}, at::kLong);
  std::vector<int64_t> buf(static_cast<size_t>(T + 1));
  for (int64_t b = 0; b < B; ++b) {
    read_block(indices[static_cast<size_t>(b)], buf.data());
    std::copy(buf.begin(), buf.end() - 1, inputs.data_ptr<int64_t>() + b * T);
    std::copy(buf.begin() + 1, buf.end(), targets.data_ptr<int64_t>() + b * T);
  }
  return {inputs, targets};
}

nlohmann::json PretrainDataset::to_json() const {
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& s : sources_) sources.push_back(s->describe());
  return {{"block_size", block_size_}, {"blocks", size()}, {"tokens", num_tokens()},
          {"sources", sources}};
}

}  // namespace concord::data
