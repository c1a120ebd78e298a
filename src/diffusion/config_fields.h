// Reading diffusers / transformers config.json members with errors that name the file and key.
// Private to src/diffusion: the U-Net, VAE and CLIP configs share these.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "concord/core/config.h"
#include "concord/core/error.h"

namespace concord::diffusion::config_fields {

// Bounds on the sizes a config may ask for: above every published diffusers / transformers
// component (SDXL: 1280 channels, 10 transformer layers, 4 blocks; CLIP bigG: 1280 wide, 5120
// intermediate, 32 layers), and small enough that the exact parameter counts stay far inside
// int64 and that a config asking for 10^12 channels is refused by name before anything is
// allocated. Within them a model can still be larger than memory; count_*_parameters says so.
inline constexpr int64_t kMaxWidth = int64_t{1} << 16;  ///< channels, hidden and embedding sizes
inline constexpr int64_t kMaxDepth = 256;               ///< layers per block, transformer depth
inline constexpr size_t kMaxBlocks = 8;                 ///< down (and up) blocks
inline constexpr int64_t kMaxVocab = int64_t{1} << 24;  ///< token embeddings

/// Fails naming `key` unless lo <= value <= hi.
inline void check_range(const std::string& source, const std::string& key, int64_t value,
                        int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    fail_config(source, "key '", key, "' is ", value, ", expected ", lo, " to ", hi);
  }
}

/// A JSON number as the integer type T: an integer, or a float with an integral value, within
/// T's range; anything else fails naming `key`. (nlohmann's get<T>() converts a float with a
/// plain cast, undefined behaviour outside T's range: fuzz_diffusion_config found an
/// eos_token_id of 9.9e21.)
template <typename T>
T integer_value(const Json& v, const char* key, const std::string& source) {
  static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>);
  using Limits = std::numeric_limits<T>;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(Limits::max())) return static_cast<T>(u);
  } else if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i >= static_cast<int64_t>(Limits::min()) &&
        (i < 0 || static_cast<uint64_t>(i) <= static_cast<uint64_t>(Limits::max()))) {
      return static_cast<T>(i);
    }
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    // [min, 2^digits) is exactly T's range for doubles: 2^digits is max + 1.
    if (std::isfinite(d) && d == std::trunc(d) && d >= static_cast<double>(Limits::min()) &&
        d < std::ldexp(1.0, Limits::digits)) {
      return static_cast<T>(d);
    }
  } else {
    fail_config(source, "key '", key, "' has the wrong type (", v.type_name(), ")");
  }
  fail_config(source, "key '", key, "' is ", v.dump(), ", not an integer in [", Limits::min(),
              ", ", Limits::max(), "]");
}

/// j[key] as T, or `fallback` when the key is absent or null.
template <typename T>
T value_or(const Json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    return integer_value<T>(*it, key, source);
  } else if constexpr (std::is_same_v<T, std::vector<int64_t>>) {
    if (!it->is_array()) fail_config(source, "key '", key, "' must be a list of integers");
    std::vector<int64_t> out;
    for (const Json& x : *it) out.push_back(integer_value<int64_t>(x, key, source));
    return out;
  } else {
    try {
      return it->get<T>();
    } catch (const std::exception&) {
      fail_config(source, "key '", key, "' has the wrong type (", it->type_name(), ")");
    }
  }
}

/// j[key] as T; absent or null is an error naming the key.
template <typename T>
T required(const Json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) fail_config(source, "key '", key, "' is missing");
  return value_or<T>(j, key, T{}, source);
}

/// A key whose other values Concord does not implement must be absent, null or this value.
inline void require_default(const Json& j, const char* key, const Json& allowed,
                            const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null() || *it == allowed) return;
  fail_config(source, "key '", key, "': ", it->dump(), " is not supported (Concord implements ",
              allowed.dump(), ")");
}

}  // namespace concord::diffusion::config_fields
