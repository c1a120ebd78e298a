// Helpers of the grape tests: a byte tokenizer that fits the tiny fixture models' 160-id
// vocabulary (ids = bytes, BOS 1, EOS 2, as scripts/fixtures/make_grape_fixtures.py tokenises),
// and the fixture pool.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "concord/core/error.h"
#include "concord/data/grape_pool.h"
#include "concord/text/tokenizer.h"
#include "test_support.h"

namespace concord::grape::testing {

class FixtureByteTokenizer final : public text::Tokenizer {
 public:
  static constexpr text::TokenId kBos = 1, kEos = 2;

  std::vector<text::TokenId> encode(std::string_view s, bool add_special_tokens) const override {
    std::vector<text::TokenId> ids;
    if (add_special_tokens) ids.push_back(kBos);
    for (unsigned char c : s) ids.push_back(static_cast<text::TokenId>(c));
    return ids;
  }
  std::string decode(const std::vector<text::TokenId>& ids, bool) const override {
    std::string out;
    for (auto id : ids) out.push_back(static_cast<char>(id));
    return out;
  }
  int64_t vocab_size() const override { return 160; }
  std::optional<text::TokenId> token_to_id(std::string_view) const override { return std::nullopt; }
  std::string id_to_token(text::TokenId id) const override { return std::string(1, static_cast<char>(id)); }
  std::optional<text::TokenId> bos_id() const override { return kBos; }
  std::optional<text::TokenId> eos_id() const override { return kEos; }
};

inline std::vector<data::GrapePool> fixture_pools() {
  return data::read_grape_pools(concord::testing::fixture("grape/pool.jsonl"));
}

}  // namespace concord::grape::testing
