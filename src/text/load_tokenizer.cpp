#include "concord/core/error.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/text/tokenizer.h"

namespace concord::text {

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  if (path == "bytes") return std::make_unique<ByteTokenizer>();
  fail(path.string(), ": no tokenizer loader for this file yet");
}

}  // namespace concord::text
