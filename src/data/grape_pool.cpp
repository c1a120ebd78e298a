#include "concord/data/grape_pool.h"

#include <unordered_map>
#include <unordered_set>

#include "concord/core/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::data {

namespace {

std::vector<GrapePool> read_pools(JsonlReader& reader, BadRecords* bad) {
  std::vector<GrapePool> pools;
  std::unordered_map<std::string, int64_t> first_line;  // pool id -> line it first appeared on
  reader.for_each([&](const json& object, const RecordLocation& loc) {
    GrapePool pool = parse_grape_pool(object, loc);
    auto [it, inserted] = first_line.emplace(pool.id, loc.line);
    if (!inserted) {
      loc.fail("pool id '" + pool.id + "' already used on line " + std::to_string(it->second));
    }
    pools.push_back(std::move(pool));
  });
  if (bad) *bad = reader.bad_records();
  return pools;
}

std::string trimmed(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

}  // namespace

std::vector<GrapePool> read_grape_pools(const fs::path& path, const JsonlOptions& options,
                                        BadRecords* bad) {
  JsonlReader reader(path, options);
  return read_pools(reader, bad);
}

std::vector<GrapePool> read_grape_pools(std::istream& in, const std::string& name,
                                        const JsonlOptions& options, BadRecords* bad) {
  JsonlReader reader(in, name, options);
  return read_pools(reader, bad);
}

int64_t dedup_responses(GrapePool& pool, bool trim) {
  std::unordered_map<std::string, size_t> kept;  // text -> index in `out`
  std::vector<GrapeResponse> out;
  for (auto& r : pool.responses) {
    std::string key = trim ? trimmed(r.text) : r.text;
    auto it = kept.find(key);
    if (it == kept.end()) {
      kept.emplace(std::move(key), out.size());
      out.push_back(std::move(r));
    } else {
      auto& first = out[it->second];
      first.duplicate_sources.push_back(r.source);
      first.duplicate_sources.insert(first.duplicate_sources.end(), r.duplicate_sources.begin(),
                                     r.duplicate_sources.end());
    }
  }
  auto removed = static_cast<int64_t>(pool.responses.size() - out.size());
  pool.responses = std::move(out);
  return removed;
}

json DedupStats::to_json() const {
  return {{"pools", pools}, {"responses_before", responses_before},
          {"responses_after", responses_after}};
}

DedupStats dedup_responses(std::vector<GrapePool>& pools, bool trim) {
  DedupStats s;
  s.pools = static_cast<int64_t>(pools.size());
  for (auto& p : pools) {
    s.responses_before += static_cast<int64_t>(p.responses.size());
    dedup_responses(p, trim);
    s.responses_after += static_cast<int64_t>(p.responses.size());
  }
  return s;
}

json grape_pool_to_json(const GrapePool& pool) {
  json responses = json::array();
  for (const auto& r : pool.responses) {
    json o = {{"text", r.text}, {"source", r.source}};
    if (!r.duplicate_sources.empty()) o["duplicate_sources"] = r.duplicate_sources;
    responses.push_back(std::move(o));
  }
  return {{"id", pool.id}, {"instruction", pool.instruction}, {"responses", responses}};
}

}  // namespace concord::data
