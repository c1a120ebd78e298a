// GRAPE response pools ("The Best Instruction-Tuning Data are Those That Fit", Sec. 3): each
// instruction comes with candidate responses from several sources; GRAPE scores every candidate
// by the target model's length-normalised log-probability and keeps the best one for SFT.
// This header reads the pools ({"id","instruction","responses":[{"text","source"}]}, validated
// by parse_grape_pool) and removes identical candidates, which would otherwise be scored twice.
#pragma once
#include <cstdint>
#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "concord/data/jsonl.h"
#include "concord/data/records.h"

namespace concord::data {

/// Reads the pools of `path`. A pool with no responses, or whose id repeats an earlier pool's,
/// is a bad record (FILE:LINE, handled by the options' policy).
std::vector<GrapePool> read_grape_pools(const std::filesystem::path& path,
                                        const JsonlOptions& options = {},
                                        BadRecords* bad = nullptr);
std::vector<GrapePool> read_grape_pools(std::istream& in, const std::string& name,
                                        const JsonlOptions& options = {},
                                        BadRecords* bad = nullptr);

/// Removes responses whose text equals an earlier response's (byte for byte, or after
/// trimming surrounding whitespace with `trim`). The first keeps its place; the sources of the
/// removed ones are appended to its duplicate_sources. Returns the number removed.
int64_t dedup_responses(GrapePool& pool, bool trim = false);

struct DedupStats {
  int64_t pools = 0;
  int64_t responses_before = 0;
  int64_t responses_after = 0;
  nlohmann::json to_json() const;
};
DedupStats dedup_responses(std::vector<GrapePool>& pools, bool trim = false);

/// The pools back as JSONL objects (duplicate sources as "duplicate_sources" when present).
nlohmann::json grape_pool_to_json(const GrapePool& pool);

}  // namespace concord::data
