// The one tokenizer interface every model, dataset and evaluator uses. Implementations:
// BpeTokenizer (Hugging Face tokenizer.json), SentencePieceTokenizer (.model) and ByteTokenizer
// (UTF-8 bytes, for built-in toy models). Third-party libraries stay behind this interface.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace concord::text {

using TokenId = int32_t;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text`. With `add_special_tokens` the tokenizer's post-processor adds what
  /// the model expects (a BOS token for Llama-style tokenizers; nothing for GPT-2).
  virtual std::vector<TokenId> encode(std::string_view text,
                                      bool add_special_tokens = false) const = 0;

  /// `ids` (a text's ids without special tokens) with the special tokens the post-processor adds
  /// around them: encode(t, true) == add_special_tokens(encode(t, false)). Callers that cut a
  /// text to fit a length cut first and add these after, as transformers' truncation does.
  /// The default adds nothing: a tokenizer whose encode() adds special tokens overrides it.
  virtual std::vector<TokenId> add_special_tokens(std::vector<TokenId> ids) const { return ids; }

  /// Text of `ids`. Invalid UTF-8 produced by partial byte tokens becomes U+FFFD, as in
  /// Hugging Face `tokenizers`.
  virtual std::string decode(const std::vector<TokenId>& ids,
                             bool skip_special_tokens = false) const = 0;

  /// Size of the id space (the largest id + 1, added tokens included).
  virtual int64_t vocab_size() const = 0;

  virtual std::optional<TokenId> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(TokenId id) const = 0;

  virtual std::optional<TokenId> bos_id() const { return std::nullopt; }
  virtual std::optional<TokenId> eos_id() const { return std::nullopt; }
  virtual std::optional<TokenId> pad_id() const { return std::nullopt; }

  /// Encodes many texts (implementations may parallelise).
  virtual std::vector<std::vector<TokenId>> encode_batch(const std::vector<std::string>& texts,
                                                         bool add_special_tokens = false) const;
};

/// Loads a tokenizer from a `tokenizer.json`, a SentencePiece `.model`, or a model folder that
/// holds one of them (tokenizer.json preferred) or a slow tokenizer's vocab.json + merges.txt
/// (BpeTokenizer::from_slow_files). The literal name "bytes" gives a ByteTokenizer.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path);

}  // namespace concord::text
