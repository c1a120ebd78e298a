// A registry of swappable parts keyed by name (after tiny-cuda-nn): losses, samplers, chat
// templates, tasks. An unknown name throws a ConfigError that lists the valid ones.
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "concord/core/error.h"

namespace concord {

template <typename Value>
class Registry {
 public:
  explicit Registry(std::string what) : what_(std::move(what)) {}

  Registry& add(const std::string& name, Value value) {
    CONCORD_CHECK(!entries_.count(name), what_, " '", name, "' registered twice");
    entries_.emplace(name, std::move(value));
    return *this;
  }

  bool contains(const std::string& name) const { return entries_.count(name) > 0; }

  const Value& get(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      // A name from a config or a flag: a ConfigError, so callers can tell it from a failure.
      throw ConfigError(detail::concat("unknown ", what_, " '", name, "' (valid: ", joined_names(), ")"));
    }
    return it->second;
  }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [k, v] : entries_) out.push_back(k);
    return out;
  }

  std::string joined_names() const {
    std::string out;
    for (const auto& [k, v] : entries_) out += (out.empty() ? "" : ", ") + k;
    return out;
  }

 private:
  std::string what_;
  std::map<std::string, Value> entries_;
};

}  // namespace concord
