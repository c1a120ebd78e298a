// Run and model configs: JSON validated against the keys each component declares.
//
// A component describes its keys once in a ConfigSchema (type, default or required, help). The
// schema resolves a user's JSON: unknown, missing or mistyped keys are errors that name the file
// and the key path ("run.json: key 'train.lr': unknown key (did you mean 'train.learning_rate'?)"),
// defaults are filled in, and the result is the exact resolved config a run writes beside its
// outputs. `--set a.b=value` overrides are checked against the same schema. Errors about keys and
// values are concord::ConfigErrors; a JSON syntax error is a FormatError naming line and column.
//
// A component whose keys fill an options struct declares them with OptionsSchema<T>
// (core/options.h), which builds this schema, the struct's JSON in and out and its validation from
// one declaration per key.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace concord {

using Json = nlohmann::json;

enum class ConfigType { Bool, Int, Float, String, Array, Object, Any };

/// "bool", "integer", "number", ...
const char* config_type_name(ConfigType type);

class ConfigSchema;

/// One declared key.
struct ConfigKey {
  std::string name;
  ConfigType type = ConfigType::Any;
  bool required = false;
  Json default_value;                     ///< used when the key is absent and not required
  std::string help;
  std::vector<std::string> choices;       ///< for strings: the allowed values (empty: any)
  std::shared_ptr<ConfigSchema> section;  ///< for objects: the nested schema (null: free-form)
  ConfigType element_type = ConfigType::Any;  ///< for arrays: the type of every element
  /// For numbers, and every element of an array of numbers: the allowed range (unset: open).
  std::optional<double> minimum, maximum;
  bool exclusive_minimum = false;  ///< minimum itself is not allowed (> rather than >=)
  bool exclusive_maximum = false;
  /// "must be >= 1", "must be in [0, 1)"; empty without a range.
  std::string range_text() const;
};

class ConfigSchema {
 public:
  ConfigSchema() = default;
  explicit ConfigSchema(std::string description) : description_(std::move(description)) {}

  /// A key the user must give.
  ConfigSchema& required(const std::string& name, ConfigType type, const std::string& help);
  /// A key with a default.
  ConfigSchema& optional(const std::string& name, ConfigType type, Json default_value,
                         const std::string& help);
  /// A string key restricted to `choices`, with a default (must be one of them).
  ConfigSchema& choice(const std::string& name, std::vector<std::string> choices,
                       const std::string& default_value, const std::string& help);
  /// A nested object validated by `section`; absent means all of its defaults.
  ConfigSchema& section(const std::string& name, ConfigSchema section, const std::string& help);
  /// Keys of `other` merged into this schema (a component reusing another's keys).
  ConfigSchema& extend(const ConfigSchema& other);
  /// A key declared in full (OptionsSchema builds its keys this way); replaces one of the same
  /// name. A default must satisfy the key's own type, choices and range.
  ConfigSchema& key(ConfigKey key);

  /// Validates `input` and fills in defaults. `source` (usually the file name) starts every
  /// error message; `prefix` is the key path of this section ("" at the top).
  Json resolve(const Json& input, const std::string& source, const std::string& prefix = "") const;

  /// The key declared at a dotted path, or nullptr.
  const ConfigKey* find(const std::string& dotted_path) const;

  /// Every key with its type, default and help, as JSON (components report their
  /// hyper-parameters back this way; `concord run --help-config` prints it).
  Json describe() const;

  const std::vector<ConfigKey>& keys() const { return keys_; }
  const std::string& description() const { return description_; }

 private:
  ConfigKey& add(const std::string& name);
  std::vector<ConfigKey> keys_;
  std::string description_;
};

/// Parses a JSON file; a syntax error names the file, line and column.
Json load_json_file(const std::filesystem::path& path);

/// Parses JSON text; `source` names it in errors (with line and column).
Json parse_json(const std::string& text, const std::string& source);

/// Applies one `a.b=value` override to `config`. The key must be declared in `schema`; the
/// value is parsed for the key's type (numbers, true/false, strings as written, arrays and
/// objects as JSON) and checked against its choices and range. Errors are ConfigErrors naming
/// the override.
void apply_override(Json& config, const std::string& assignment, const ConfigSchema& schema);

/// Loads a config file, applies the overrides in order, resolves it against `schema`.
Json load_config(const std::filesystem::path& path, const ConfigSchema& schema,
                 const std::vector<std::string>& overrides = {});

}  // namespace concord
