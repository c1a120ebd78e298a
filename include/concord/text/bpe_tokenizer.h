// BpeTokenizer: a Hugging Face `tokenizer.json` with a BPE model (Sennrich et al. 2016, "Neural
// Machine Translation of Rare Words with Subword Units"; byte-level BPE as in GPT-2, Radford et
// al. 2019), run through the same pipeline as the `tokenizers` package:
//   added tokens split out -> normalizer -> pre-tokenizer -> BPE (merges by rank) -> post-processor
// and decoders on the way back. Supported parts (anything else is a FormatError naming the key):
//   normalizer     Prepend, Replace (String or Regex), NFC, NFD, NFKC, NFKD, Lowercase,
//                  Sequence, null
//   pre_tokenizer  ByteLevel (GPT-2 regex or none), Split (String/Regex, all five behaviours,
//                  invert), Metaspace (prepend_scheme first/always/never, split), Digits, Sequence
//   model          BPE: vocab, merges as "a b" or [a, b], byte_fallback, unk_token, fuse_unk,
//                  continuing_subword_prefix, end_of_word_suffix (CLIP's "</w>"),
//                  ignore_merges
//   post_processor TemplateProcessing (single), ByteLevel, RobertaProcessing, BertProcessing,
//                  Sequence
//   decoder        ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence
// Malformed UTF-8 input is first repaired (see utf8.h); `truncation` and `padding` are ignored
// (Concord's callers cut and pad ids themselves). Encoding is thread-safe; the per-word merge
// cache is shared behind a reader/writer lock.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "concord/text/tokenizer.h"

namespace concord::text {

class BpeTokenizer final : public Tokenizer {
 public:
  /// Reads `path` (a tokenizer.json). BOS/EOS/PAD come from a tokenizer_config.json beside it
  /// when there is one, else from the post-processor's template and the usual token names.
  static std::unique_ptr<BpeTokenizer> from_file(const std::filesystem::path& path);

  /// Parses tokenizer.json text; `name` is used in error messages in place of a file name.
  static std::unique_ptr<BpeTokenizer> from_json(std::string_view json,
                                                 const std::string& name = "tokenizer.json");

  /// Parses tokenizer.json text with the special-token choices of a tokenizer_config.json
  /// (`config_json`, its text; empty for none), as from_file() does with the one beside it.
  static std::unique_ptr<BpeTokenizer> from_json(std::string_view json, const std::string& name,
                                                 std::string_view config_json);

  /// A folder with a slow tokenizer's files and no tokenizer.json (the layout of SDXL's
  /// `tokenizer/` and `tokenizer_2/`): vocab.json, merges.txt and tokenizer_config.json, whose
  /// tokenizer_class picks the pipeline transformers' converter builds for it:
  ///   CLIPTokenizer  normalizer NFC, \s+ -> " ", Lowercase; Split on CLIP's word regex
  ///                  (removed, inverted) then ByteLevel; BPE with end_of_word_suffix "</w>";
  ///                  <bos> $A <eos>; bos, eos, unk and pad (SDXL's tokenizer_2 pads with "!")
  ///                  become special added tokens, as transformers registers them.
  ///   GPT2Tokenizer  ByteLevel (add_prefix_space from the config), no template.
  /// Anything else is a FormatError naming the class.
  static std::unique_ptr<BpeTokenizer> from_slow_files(const std::filesystem::path& folder);

  ~BpeTokenizer() override;

  std::vector<TokenId> encode(std::string_view text, bool add_special_tokens = false) const override;
  std::vector<TokenId> add_special_tokens(std::vector<TokenId> ids) const override;
  std::string decode(const std::vector<TokenId>& ids, bool skip_special_tokens = false) const override;
  int64_t vocab_size() const override;
  std::optional<TokenId> token_to_id(std::string_view token) const override;
  std::string id_to_token(TokenId id) const override;
  std::optional<TokenId> bos_id() const override;
  std::optional<TokenId> eos_id() const override;
  std::optional<TokenId> pad_id() const override;

  /// True for added tokens marked "special" (what decode(..., skip_special_tokens) drops).
  bool is_special(TokenId id) const;

  /// BPE of one pre-tokenised word (raw UTF-8 bytes; for byte-level models, the bytes before the
  /// byte-to-unicode map), skipping the cache. `force_heap` selects the priority-queue merge
  /// used for long words even for short ones, so tests can check both agree.
  std::vector<TokenId> bpe_word(std::string_view word, bool force_heap = false) const;

 private:
  BpeTokenizer();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace concord::text
