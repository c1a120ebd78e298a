// Work split over processes launched as torchrun launches them, and the merge of their parts,
// for the jobs whose ranks need no communication beyond files (GRAPE scoring, TUMLU evaluation).
//
// The protocol:
//   1. Each process learns its place from RANK and WORLD_SIZE (process_shard(); this is the one
//      place Concord reads them) and takes the items i with i % world_size == rank.
//   2. It writes its results as one part file beside the final output, named
//      "<stem>.rank<r>-of-<w><ext>" ("scores.rank1-of-4.jsonl" for "scores.jsonl"), atomically
//      (core/files.h: a temporary name, then rename), so no reader ever sees a torn part.
//   3. It then looks for every rank's part. Whoever finds them all merges: the items of all parts
//      in index order, each index exactly once (merge_shard_items: a duplicate or a missing item is
//      an error). Until then the missing parts are reported (ShardParts::missing_names). Two
//      ranks finishing together may both merge; the merged content is the same and its write
//      atomic, so either result stands.
// Resuming: a part that exists is not computed again.
#pragma once
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "concord/core/error.h"

namespace concord {

/// A process's place among the processes of a job.
struct Shard {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;  ///< the process's index on its machine (its GPU)

  /// Whether item `index` is this process's (index % world_size == rank).
  bool owns(int64_t index) const { return index % world_size == rank; }
  /// The indices in [0, count) this process takes.
  std::vector<int64_t> indices(int64_t count) const;
  /// Throws unless 0 <= rank < world_size.
  void validate() const;
};

/// RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them (absent: rank 0 of 1, local rank 0). A
/// value that is not an integer, or a rank outside [0, WORLD_SIZE), is a ConfigError naming the
/// variable.
Shard process_shard();

/// "<stem>.rank<r>-of-<w><ext>" for the final file name "<stem><ext>".
std::string shard_part_name(const std::string& final_name, const Shard& part);

/// The part files of one output: `dir`/shard_part_name(final_name, {r, world_size}) for every r.
class ShardParts {
 public:
  ShardParts(std::filesystem::path dir, std::string final_name, int64_t world_size);

  std::filesystem::path path(int64_t rank) const;
  bool has(int64_t rank) const { return std::filesystem::exists(path(rank)); }
  /// Writes rank's part atomically.
  void write(int64_t rank, const std::string& contents) const;
  /// The ranks whose part is not there yet.
  std::vector<int64_t> missing() const;
  bool complete() const { return missing().empty(); }
  /// The missing parts' file names, comma-separated ("" when complete).
  std::string missing_names() const;
  /// Every part's path, in rank order.
  std::vector<std::filesystem::path> paths() const;
  int64_t world_size() const { return world_size_; }

 private:
  std::filesystem::path dir_;
  std::string final_name_;
  int64_t world_size_;
};

/// Merges the items of the parts into index order. Each index may appear once: one seen twice is
/// an error naming it and `what`. With `expected` >= 0 the indices must be exactly 0..expected-1:
/// a missing one is an error naming the first missing index.
template <typename Item, typename IndexOf>
std::vector<Item> merge_shard_items(std::vector<std::vector<Item>> parts, IndexOf index_of,
                                    int64_t expected, const std::string& what) {
  std::vector<Item> all;
  for (auto& part : parts) {
    for (auto& item : part) all.push_back(std::move(item));
  }
  std::stable_sort(all.begin(), all.end(), [&](const Item& a, const Item& b) {
    return index_of(a) < index_of(b);
  });
  for (size_t i = 1; i < all.size(); ++i) {
    if (index_of(all[i]) == index_of(all[i - 1])) {
      fail(what, ": item ", index_of(all[i]), " appears in two parts");
    }
  }
  if (expected >= 0) {
    for (int64_t i = 0; i < expected; ++i) {
      if (i >= static_cast<int64_t>(all.size()) || index_of(all[static_cast<size_t>(i)]) != i) {
        fail(what, ": item ", i, " is missing from the parts");
      }
    }
    if (static_cast<int64_t>(all.size()) != expected) {
      fail(what, ": expected items 0..", expected - 1, ", the parts also hold item ",
           index_of(all.back()));
    }
  }
  return all;
}

/// Step 3 of the protocol: when every part of `parts` is there, reads each with `read_part`
/// (path -> std::vector<Item>) and merges them (merge_shard_items); otherwise nothing.
template <typename Item, typename ReadPart, typename IndexOf>
std::optional<std::vector<Item>> merge_shard_parts_if_complete(const ShardParts& parts,
                                                               ReadPart read_part,
                                                               IndexOf index_of, int64_t expected,
                                                               const std::string& what) {
  if (!parts.complete()) return std::nullopt;
  std::vector<std::vector<Item>> items;
  for (const auto& p : parts.paths()) items.push_back(read_part(p));
  return merge_shard_items<Item>(std::move(items), index_of, expected, what);
}

}  // namespace concord
