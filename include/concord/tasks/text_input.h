// Plain-text inputs of the tasks that read a corpus (diversity, pangu_ablation).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace concord::tasks {

/// The "text" field of the first `limit` records of a JSONL file (0: all); a record without a
/// string "text" is an error naming FILE:LINE.
std::vector<std::string> read_jsonl_texts(const std::string& path, int64_t limit = 0);

}  // namespace concord::tasks
