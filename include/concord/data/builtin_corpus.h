// Concord's built-in text: a small procedurally generated English corpus for the quickstart and
// for examples that must run offline with no download. Every document is a few sentences from a
// handful of templates (a small world of animals, places and objects, and word problems whose
// arithmetic is correct), so a tiny model trained on it has structure to learn and a loss that
// falls measurably within minutes on a CPU. Deterministic for a given seed on every platform
// (it draws from std::mt19937_64 directly, not from the implementation-defined std
// distributions).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace concord::data {

/// `documents` documents of 3 to 6 sentences each.
std::vector<std::string> builtin_corpus(int64_t documents, uint64_t seed = 1234);

}  // namespace concord::data
