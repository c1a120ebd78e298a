#include "concord/text/tokenizer.h"

#include "concord/core/error.h"
#include "concord/text/byte_tokenizer.h"

namespace concord::text {

std::vector<std::vector<TokenId>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          bool add_special_tokens) const {
  std::vector<std::vector<TokenId>> out;
  out.reserve(texts.size());
  for (const auto& t : texts) out.push_back(encode(t, add_special_tokens));
  return out;
}

}  // namespace concord::text
