#include "concord/core/error.h"
#include "concord/text/bpe_tokenizer.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/text/sentencepiece_tokenizer.h"
#include "concord/text/tokenizer.h"

namespace concord::text {

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  if (path == "bytes") return std::make_unique<ByteTokenizer>();
  if (fs::is_directory(path)) {
    // A model folder: tokenizer.json when there is one (what transformers prefers too).
    if (fs::is_regular_file(path / "tokenizer.json")) {
      return BpeTokenizer::from_file(path / "tokenizer.json");
    }
    if (fs::is_regular_file(path / "tokenizer.model")) {
      return std::make_unique<SentencePieceTokenizer>(path / "tokenizer.model");
    }
    // A slow tokenizer's files (SDXL's tokenizer/ and tokenizer_2/ ship only these).
    if (fs::is_regular_file(path / "vocab.json") && fs::is_regular_file(path / "merges.txt")) {
      return BpeTokenizer::from_slow_files(path);
    }
    fail(path.string(), ": no tokenizer.json, tokenizer.model or vocab.json + merges.txt in this "
                        "folder");
  }
  if (!fs::is_regular_file(path)) fail(path.string(), ": no such file");
  if (path.extension() == ".json") return BpeTokenizer::from_file(path);
  if (path.extension() == ".model") return std::make_unique<SentencePieceTokenizer>(path);
  fail(path.string(), ": unknown tokenizer format (expected a tokenizer.json or a SentencePiece "
                      ".model, or \"bytes\")");
}

}  // namespace concord::text
