// tests/fixtures/tokenizers/expected.json (made by scripts/fixtures/make_tokenizer_fixtures.py) and
// its hex-encoded samples, for the BPE and SentencePiece tests.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "concord/core/files.h"
#include "test_support.h"

namespace concord::testing {

/// The reference encodings, parsed once.
inline const nlohmann::json& tokenizer_expected() {
  static const nlohmann::json doc =
      nlohmann::json::parse(concord::read_file(fixture("tokenizers/expected.json")));
  return doc;
}

/// "e282ac" -> the bytes E2 82 AC.
inline std::string unhex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

}  // namespace concord::testing
