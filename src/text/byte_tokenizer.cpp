#include "concord/text/byte_tokenizer.h"

#include "concord/core/error.h"

namespace concord::text {

std::vector<TokenId> ByteTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() + 1);
  for (unsigned char c : text) ids.push_back(static_cast<TokenId>(c));
  return add_special_tokens ? this->add_special_tokens(std::move(ids)) : ids;
}

std::vector<TokenId> ByteTokenizer::add_special_tokens(std::vector<TokenId> ids) const {
  ids.insert(ids.begin(), kEndOfText);  // GPT-2's convention: <|endoftext|> opens a document
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
  std::string out;
  out.reserve(ids.size());
  for (TokenId id : ids) {
    CONCORD_CHECK(id >= 0 && id <= kEndOfText, "ByteTokenizer: id ", id, " out of range [0, 256]");
    if (id == kEndOfText) {
      if (!skip_special_tokens) out += "<|endoftext|>";
    } else {
      out.push_back(static_cast<char>(id));
    }
  }
  return out;
}

std::optional<TokenId> ByteTokenizer::token_to_id(std::string_view token) const {
  if (token == "<|endoftext|>") return kEndOfText;
  if (token.size() == 1) return static_cast<TokenId>(static_cast<unsigned char>(token[0]));
  return std::nullopt;
}

std::string ByteTokenizer::id_to_token(TokenId id) const {
  CONCORD_CHECK(id >= 0 && id <= kEndOfText, "ByteTokenizer: id ", id, " out of range [0, 256]");
  if (id == kEndOfText) return "<|endoftext|>";
  return std::string(1, static_cast<char>(id));
}

}  // namespace concord::text
