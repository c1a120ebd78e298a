#include "concord/core/config.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace concord {

const char* config_type_name(ConfigType type) {
  switch (type) {
    case ConfigType::Bool: return "boolean";
    case ConfigType::Int: return "integer";
    case ConfigType::Float: return "number";
    case ConfigType::String: return "string";
    case ConfigType::Array: return "array";
    case ConfigType::Object: return "object";
    case ConfigType::Any: return "any";
  }
  return "?";
}

namespace {

const char* json_type_name(const Json& v) {
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  if (v.is_object()) return "object";
  if (v.is_null()) return "null";
  return "value";
}

bool type_matches(ConfigType type, const Json& v) {
  switch (type) {
    case ConfigType::Bool: return v.is_boolean();
    case ConfigType::Int: return v.is_number_integer();
    case ConfigType::Float: return v.is_number();
    case ConfigType::String: return v.is_string();
    case ConfigType::Array: return v.is_array();
    case ConfigType::Object: return v.is_object();
    case ConfigType::Any: return true;
  }
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join_path(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string suggestion(const std::string& name, const std::vector<ConfigKey>& keys) {
  std::string best;
  size_t best_d = 3;  // suggest only near misses
  for (const auto& k : keys) {
    size_t d = edit_distance(name, k.name);
    if (d < best_d) {
      best_d = d;
      best = k.name;
    }
  }
  return best;
}

std::string valid_names(const std::vector<ConfigKey>& keys) {
  std::string out;
  for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k.name;
  return out;
}

std::string number_text(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<long long>(v));
  }
  std::ostringstream out;
  out << v;
  return out.str();
}

bool in_range(const ConfigKey& k, double v) {
  if (k.minimum && (k.exclusive_minimum ? !(v > *k.minimum) : !(v >= *k.minimum))) return false;
  if (k.maximum && (k.exclusive_maximum ? !(v < *k.maximum) : !(v <= *k.maximum))) return false;
  return true;
}

// The element-level checks of a value already of the key's type: an array's element types, and
// choices and range on the value or on each element. Returns the problem, or "" when it is fine;
// `at` gets the key path suffix of the offending element ("[2]").
std::string scalar_problem(const ConfigKey& k, const Json& v) {
  if (!k.choices.empty() && v.is_string() &&
      std::find(k.choices.begin(), k.choices.end(), v.get<std::string>()) == k.choices.end()) {
    std::string valid;
    for (const auto& c : k.choices) valid += (valid.empty() ? "" : ", ") + c;
    return "'" + v.get<std::string>() + "' is not one of: " + valid;
  }
  if ((k.minimum || k.maximum) && v.is_number() && !in_range(k, v.get<double>())) {
    return k.range_text() + ", got " + v.dump();
  }
  return "";
}

std::string value_problem(const ConfigKey& k, const Json& v, std::string& at) {
  at.clear();
  if (!v.is_array()) return scalar_problem(k, v);
  for (size_t i = 0; i < v.size(); ++i) {
    const Json& e = v[i];
    if (!type_matches(k.element_type, e)) {
      at = "[" + std::to_string(i) + "]";
      return std::string("expected ") + config_type_name(k.element_type) + ", got " +
             json_type_name(e) + " " + e.dump();
    }
    std::string p = scalar_problem(k, e);
    if (!p.empty()) {
      at = "[" + std::to_string(i) + "]";
      return p;
    }
  }
  return "";
}

}  // namespace

std::string ConfigKey::range_text() const {
  if (minimum && maximum) {
    return "must be in " + std::string(exclusive_minimum ? "(" : "[") + number_text(*minimum) +
           ", " + number_text(*maximum) + (exclusive_maximum ? ")" : "]");
  }
  if (minimum) return std::string("must be ") + (exclusive_minimum ? "> " : ">= ") + number_text(*minimum);
  if (maximum) return std::string("must be ") + (exclusive_maximum ? "< " : "<= ") + number_text(*maximum);
  return "";
}

ConfigKey& ConfigSchema::add(const std::string& name) {
  auto it = std::find_if(keys_.begin(), keys_.end(), [&](const ConfigKey& k) { return k.name == name; });
  if (it != keys_.end()) return *it;  // a later declaration refines an earlier one
  keys_.push_back(ConfigKey{});
  keys_.back().name = name;
  return keys_.back();
}

ConfigSchema& ConfigSchema::required(const std::string& name, ConfigType type, const std::string& help) {
  auto& k = add(name);
  k.type = type;
  k.required = true;
  k.help = help;
  return *this;
}

ConfigSchema& ConfigSchema::optional(const std::string& name, ConfigType type, Json default_value,
                                     const std::string& help) {
  CONCORD_CHECK(default_value.is_null() || type_matches(type, default_value),
                "ConfigSchema: default of '", name, "' is not a ", config_type_name(type));
  auto& k = add(name);
  k.type = type;
  k.required = false;
  k.default_value = std::move(default_value);
  k.help = help;
  return *this;
}

ConfigSchema& ConfigSchema::choice(const std::string& name, std::vector<std::string> choices,
                                   const std::string& default_value, const std::string& help) {
  CONCORD_CHECK(std::find(choices.begin(), choices.end(), default_value) != choices.end(),
                "ConfigSchema: default '", default_value, "' of '", name, "' is not a choice");
  auto& k = add(name);
  k.type = ConfigType::String;
  k.required = false;
  k.default_value = default_value;
  k.choices = std::move(choices);
  k.help = help;
  return *this;
}

ConfigSchema& ConfigSchema::section(const std::string& name, ConfigSchema nested, const std::string& help) {
  auto& k = add(name);
  k.type = ConfigType::Object;
  k.required = false;
  k.default_value = Json::object();
  k.section = std::make_shared<ConfigSchema>(std::move(nested));
  k.help = help;
  return *this;
}

ConfigSchema& ConfigSchema::extend(const ConfigSchema& other) {
  for (const auto& k : other.keys_) add(k.name) = k;
  return *this;
}

ConfigSchema& ConfigSchema::key(ConfigKey key) {
  if (!key.required && !key.section && !key.default_value.is_null()) {
    CONCORD_CHECK(type_matches(key.type, key.default_value), "ConfigSchema: default of '",
                  key.name, "' is not a ", config_type_name(key.type));
    std::string at;
    const std::string problem = value_problem(key, key.default_value, at);
    CONCORD_CHECK(problem.empty(), "ConfigSchema: default of '", key.name, at, "': ", problem);
  }
  const std::string name = key.name;
  add(name) = std::move(key);
  return *this;
}

Json ConfigSchema::resolve(const Json& input, const std::string& source, const std::string& prefix) const {
  const std::string where = prefix.empty() ? "the top level" : "'" + prefix + "'";
  if (!input.is_object()) {
    fail_config(source, where, ": expected an object, got ", json_type_name(input));
  }
  for (auto it = input.begin(); it != input.end(); ++it) {
    if (find(it.key()) != nullptr) continue;
    // The key as written, with control characters escaped: a key holding a newline (a "\n"
    // escape in the JSON) split the one-line message (found by fuzz_lm_config).
    std::string written = json_quoted(it.key());
    written = written.substr(1, written.size() - 2);
    std::string msg = "unknown key '" + join_path(prefix, written) + "'";
    std::string near = suggestion(it.key(), keys_);
    if (!near.empty()) {
      msg += " (did you mean '" + join_path(prefix, near) + "'?)";
    } else {
      msg += " (valid keys at " + where + ": " + valid_names(keys_) + ")";
    }
    fail_config(source, msg);
  }
  Json out = Json::object();
  for (const auto& k : keys_) {
    const std::string path = join_path(prefix, k.name);
    auto it = input.find(k.name);
    if (it == input.end() || it->is_null()) {
      if (k.required) fail_config(source, "missing required key '", path, "' (", k.help, ")");
      out[k.name] = k.section ? k.section->resolve(Json::object(), source, path) : k.default_value;
      continue;
    }
    const Json& v = *it;
    if (!type_matches(k.type, v)) {
      fail_config(source, "key '", path, "': expected ", config_type_name(k.type), ", got ",
                  json_type_name(v), " ", v.dump());
    }
    std::string at;
    const std::string problem = value_problem(k, v, at);
    if (!problem.empty()) fail_config(source, "key '", path, at, "': ", problem);
    out[k.name] = k.section ? k.section->resolve(v, source, path) : v;
  }
  return out;
}

const ConfigKey* ConfigSchema::find(const std::string& dotted_path) const {
  auto dot = dotted_path.find('.');
  const std::string head = dotted_path.substr(0, dot);
  for (const auto& k : keys_) {
    if (k.name != head) continue;
    if (dot == std::string::npos) return &k;
    return k.section ? k.section->find(dotted_path.substr(dot + 1)) : nullptr;
  }
  return nullptr;
}

Json ConfigSchema::describe() const {
  Json out = Json::object();
  for (const auto& k : keys_) {
    Json d = {{"type", config_type_name(k.type)}, {"help", k.help}};
    if (k.required) d["required"] = true;
    else if (!k.section) d["default"] = k.default_value;
    if (!k.choices.empty()) d["choices"] = k.choices;
    if (k.type == ConfigType::Array && k.element_type != ConfigType::Any) {
      d["elements"] = config_type_name(k.element_type);
    }
    if (k.minimum || k.maximum) d["range"] = k.range_text();
    if (k.section) d["keys"] = k.section->describe();
    out[k.name] = d;
  }
  return out;
}

Json parse_json(const std::string& text, const std::string& source) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann reports a byte offset; people read line:column.
    size_t offset = std::min<size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
    size_t line = 1 + std::count(text.begin(), text.begin() + offset, '\n');
    size_t line_start = text.rfind('\n', offset == 0 ? 0 : offset - 1);
    size_t column = line_start == std::string::npos ? offset + 1 : offset - line_start;
    std::string what = e.what();
    if (auto p = what.find("parse error"); p != std::string::npos) what = what.substr(p);
    fail_format(source, "line ", line, " column ", column, ": invalid JSON: ", what);
  } catch (const Json::exception& e) {
    // Not a syntax error but still bad input, e.g. a number too large for a double (out_of_range,
    // found by fuzz/fuzz_config.cpp).
    fail_format(source, "invalid JSON: ", e.what());
  }
}

Json load_json_file(const std::filesystem::path& path) {
  return parse_json(read_file(path), path.string());
}

void apply_override(Json& config, const std::string& assignment, const ConfigSchema& schema) {
  const std::string source = "--set " + assignment;
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) fail_config(source, "expected key.path=value");
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const ConfigKey* key = schema.find(path);
  if (!key) {
    // The nearest declared key among the path's siblings, as resolve() suggests for files.
    const auto dot = path.rfind('.');
    const ConfigSchema* parent = &schema;
    if (dot != std::string::npos) {
      const ConfigKey* section = schema.find(path.substr(0, dot));
      parent = section && section->section ? section->section.get() : nullptr;
    }
    const std::string leaf = dot == std::string::npos ? path : path.substr(dot + 1);
    const std::string near = parent ? suggestion(leaf, parent->keys()) : "";
    if (!near.empty()) {
      fail_config(source, "unknown key '", path, "' (did you mean '",
                  dot == std::string::npos ? near : path.substr(0, dot + 1) + near, "'?)");
    }
    fail_config(source, "unknown key '", path, "'");
  }

  Json value;
  if (key->type == ConfigType::String) {
    value = text;  // strings are taken as written: no quotes needed on a command line
  } else {
    try {
      value = Json::parse(text);
    } catch (const Json::exception&) {
      if (key->type == ConfigType::Any) value = text;
      else fail_config(source, "'", text, "' is not a valid ", config_type_name(key->type));
    }
    if (!type_matches(key->type, value)) {
      fail_config(source, "key '", path, "' expects ", config_type_name(key->type), ", got ",
                  json_type_name(value));
    }
  }
  std::string at;
  const std::string problem = value_problem(*key, value, at);
  if (!problem.empty()) fail_config(source, "key '", path, at, "': ", problem);

  Json* node = &config;
  size_t start = 0;
  while (true) {
    auto dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (dot == std::string::npos) {
      (*node)[part] = value;
      break;
    }
    Json& child = (*node)[part];
    if (child.is_null()) child = Json::object();
    if (!child.is_object()) {
      fail_config(source, "'", path.substr(0, dot), "' is not an object in the config");
    }
    node = &child;
    start = dot + 1;
  }
}

Json load_config(const std::filesystem::path& path, const ConfigSchema& schema,
                 const std::vector<std::string>& overrides) {
  Json raw = load_json_file(path);
  if (!raw.is_object()) fail_config(path.string(), "expected a JSON object at the top level");
  for (const auto& o : overrides) apply_override(raw, o, schema);
  return schema.resolve(raw, path.string());
}

}  // namespace concord
