// ByteTokenizer: ids 0..255 are the UTF-8 bytes of the text; 256 is <|endoftext|> (used as BOS,
// EOS and padding). The tokenizer of Concord's built-in toy models: no file, no training, every
// string round-trips exactly.
#pragma once
#include "concord/text/tokenizer.h"

namespace concord::text {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr TokenId kEndOfText = 256;

  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = false) const override;
  std::vector<TokenId> add_special_tokens(std::vector<TokenId> ids) const override;
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override { return 257; }
  std::optional<TokenId> token_to_id(std::string_view token) const override;
  std::string id_to_token(TokenId id) const override;
  std::optional<TokenId> bos_id() const override { return kEndOfText; }
  std::optional<TokenId> eos_id() const override { return kEndOfText; }
  std::optional<TokenId> pad_id() const override { return kEndOfText; }
};

}  // namespace concord::text
