// Reading diffusers / transformers config.json members with errors that name the file and key.
// Private to src/diffusion: the U-Net, VAE and CLIP configs share these.
#pragma once
#include <string>
#include <vector>

#include "concord/core/config.h"
#include "concord/core/error.h"

namespace concord::diffusion::config_fields {

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
