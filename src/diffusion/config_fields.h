// Reading diffusers / transformers config.json members with errors that name the file and key.
// Private to src/diffusion: the U-Net, VAE and CLIP configs share these.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
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

/// j[key] as T, or `fallback` when the key is absent or null.
template <typename T>
T value_or(const Json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const std::exception&) {
    fail_config(source, "key '", key, "' has the wrong type (", it->type_name(), ")");
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
