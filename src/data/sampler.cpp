#include "concord/data/sampler.h"

#include <numeric>
#include <random>

#include "concord/core/error.h"
#include "concord/core/shard.h"

namespace concord::data {

namespace {

// SplitMix64 (Steele, Lea, Flood 2014): decorrelates nearby (seed, epoch) pairs, so seed 1 /
// epoch 0 and seed 0 / epoch 1 give unrelated orders.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform integer in [0, bound) by rejection (no modulo bias), from a standard-fixed engine.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;  // largest multiple of bound, exclusive
  uint64_t x;
  do {
    x = rng();
  } while (x >= limit);
  return x % bound;
}

}  // namespace

BatchSampler::BatchSampler(int64_t num_items, SamplerOptions options)
    : num_items_(num_items), options_(options) {
  CONCORD_CHECK(num_items >= 0, "BatchSampler: negative number of items ", num_items);
  CONCORD_CHECK(options.batch_size > 0, "BatchSampler: batch_size must be positive, got ",
                options.batch_size);
  CONCORD_CHECK(options.world_size > 0, "BatchSampler: world_size must be positive, got ",
                options.world_size);
  CONCORD_CHECK(options.rank >= 0 && options.rank < options.world_size, "BatchSampler: rank ",
                options.rank, " out of range [0, ", options.world_size, ")");
  start_epoch(0);
}

std::vector<int64_t> BatchSampler::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), int64_t{0});
  std::mt19937_64 rng(splitmix64(splitmix64(seed) + static_cast<uint64_t>(epoch)));
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i + 1)));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(j)]);
  }
  return p;
}

std::vector<int64_t> BatchSampler::epoch_items(int64_t epoch) const {
  std::vector<int64_t> order;
  if (options_.shuffle) {
    order = permutation(num_items_, options_.seed, epoch);
  } else {
    order.resize(static_cast<size_t>(num_items_));
    std::iota(order.begin(), order.end(), int64_t{0});
  }
  int64_t w = options_.world_size;
  int64_t n = options_.even_shards ? num_items_ / w * w : num_items_;
  std::vector<int64_t> mine;
  mine.reserve(static_cast<size_t>(n / w + 1));
  for (int64_t i = options_.rank; i < n; i += w) mine.push_back(order[static_cast<size_t>(i)]);
  return mine;
}

int64_t BatchSampler::batches_per_epoch() const {
  auto n = static_cast<int64_t>(items_.size());
  int64_t b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void BatchSampler::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  position_ = 0;
  items_ = epoch_items(epoch);
}

std::vector<int64_t> BatchSampler::next() {
  if (position_ >= batches_per_epoch()) {
    start_epoch(epoch_ + 1);
    CONCORD_CHECK(batches_per_epoch() > 0, "BatchSampler: rank ", options_.rank, " of ",
                  options_.world_size, " has no full batch of ", options_.batch_size, " in ",
                  num_items_, " items");
  }
  auto begin = static_cast<size_t>(position_ * options_.batch_size);
  size_t end = std::min(items_.size(), begin + static_cast<size_t>(options_.batch_size));
  ++position_;
  return {items_.begin() + static_cast<std::ptrdiff_t>(begin),
          items_.begin() + static_cast<std::ptrdiff_t>(end)};
}

SamplerOptions SamplerOptions::for_this_process() const {
  const Shard shard = process_shard();
  SamplerOptions o = *this;
  o.rank = shard.rank;
  o.world_size = shard.world_size;
  o.even_shards = even_shards || shard.world_size > 1;
  return o;
}

nlohmann::json BatchSampler::state() const {
  return {{"seed", options_.seed},
          {"epoch", epoch_},
          {"position", position_},
          {"num_items", num_items_},
          {"batch_size", options_.batch_size},
          {"shuffle", options_.shuffle},
          {"drop_last", options_.drop_last},
          {"rank", options_.rank},
          {"world_size", options_.world_size},
          {"even_shards", options_.even_shards}};
}

void BatchSampler::load_state(const nlohmann::json& state) {
  CONCORD_CHECK(state.is_object(), "sampler state: expected a JSON object, got ",
                state.type_name());
  auto get = [&](const char* key) -> const nlohmann::json& {
    auto it = state.find(key);
    CONCORD_CHECK(it != state.end(), "sampler state: missing key '", key, "'");
    return *it;
  };
  auto get_int = [&](const char* key) {
    const auto& v = get(key);
    CONCORD_CHECK(v.is_number_integer(), "sampler state: key '", key,
                  "' must be an integer, got ", v.type_name());
    return v.get<int64_t>();
  };
  auto get_bool = [&](const char* key) {
    const auto& v = get(key);
    CONCORD_CHECK(v.is_boolean(), "sampler state: key '", key, "' must be a boolean, got ",
                  v.type_name());
    return v.get<bool>();
  };
  auto same = [&](const char* key, int64_t mine) {
    int64_t saved = get_int(key);
    CONCORD_CHECK(saved == mine, "sampler state: key '", key, "' is ", saved,
                  " in the saved state but ", mine, " here (resuming on different data or "
                  "settings)");
  };
  auto same_bool = [&](const char* key, bool mine) {
    CONCORD_CHECK(get_bool(key) == mine, "sampler state: key '", key, "' differs from the saved "
                  "state (resuming with different settings)");
  };
  same("num_items", num_items_);
  // The position counts steps of the global batch (batch_size x world_size items of the epoch's
  // permutation), so a state from another rank, or from a run with another world size and the
  // same global batch, continues at the same items; the rank is this process's own.
  const int64_t saved_global = get_int("batch_size") * get_int("world_size");
  CONCORD_CHECK(saved_global == options_.batch_size * options_.world_size, "sampler state: the "
                "global batch (batch_size x world_size) is ", get_int("batch_size"), " x ",
                get_int("world_size"), " in the saved state but ", options_.batch_size, " x ",
                options_.world_size, " here (resuming with different settings)");
  same_bool("shuffle", options_.shuffle);
  same_bool("drop_last", options_.drop_last);
  // even_shards only trims an epoch's tail to a multiple of the world size; a run resumed on
  // another world size (for_this_process() sets it when there are several) may differ there.
  if (get_int("world_size") == options_.world_size) same_bool("even_shards", options_.even_shards);
  const auto& seed = get("seed");
  CONCORD_CHECK(seed.is_number_unsigned() || (seed.is_number_integer() && seed.get<int64_t>() >= 0),
                "sampler state: key 'seed' must be a non-negative integer");
  int64_t epoch = get_int("epoch");
  int64_t position = get_int("position");
  CONCORD_CHECK(epoch >= 0, "sampler state: key 'epoch' is negative (", epoch, ")");
  options_.seed = seed.get<uint64_t>();
  start_epoch(epoch);
  CONCORD_CHECK(position >= 0 && position <= batches_per_epoch(), "sampler state: key "
                "'position' is ", position, ", outside [0, ", batches_per_epoch(), "]");
  position_ = position;
}

}  // namespace concord::data
