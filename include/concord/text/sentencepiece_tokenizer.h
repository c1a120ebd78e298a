// SentencePieceTokenizer: a SentencePiece `.model` (Kudo & Richardson 2018, "SentencePiece: A
// simple and language independent subword tokenizer") through libsentencepiece, reached via the
// concord_sentencepiece_shim plug-in (see sentencepiece_shim.h for why it is a plug-in).
//
// The plug-in is looked for in this order: $CONCORD_SPM_SHIM (a path to the .so), the install
// library folder (compile definition CONCORD_SPM_SHIM_INSTALL_PATH), the build folder
// (CONCORD_SPM_SHIM_BUILD_PATH), then the plain name through the dynamic loader's search path.
//
// encode(add_special_tokens) prepends the model's BOS when it has one (the Llama convention);
// decode drops control tokens with skip_special_tokens and otherwise writes their pieces
// ("<s>", "</s>") where they stand. Malformed UTF-8 is repaired first, as for BpeTokenizer.
#pragma once
#include <filesystem>
#include <memory>
#include <string>

#include "concord/text/tokenizer.h"

namespace concord::text {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  /// Loads `model_path`; throws concord::Error when the plug-in cannot be found or loaded (the
  /// message lists the places tried) and FormatError when the model file is bad.
  explicit SentencePieceTokenizer(const std::filesystem::path& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = false) const override;
  std::vector<TokenId> add_special_tokens(std::vector<TokenId> ids) const override;
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override;
  std::optional<TokenId> token_to_id(std::string_view token) const override;
  std::string id_to_token(TokenId id) const override;
  std::optional<TokenId> bos_id() const override;
  std::optional<TokenId> eos_id() const override;
  std::optional<TokenId> pad_id() const override;

  /// Path of the plug-in that would be loaded, or empty when none is found or this process
  /// cannot load one (an AddressSanitizer build: the sanitizer refuses RTLD_DEEPBIND).
  static std::filesystem::path find_shim();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace concord::text
