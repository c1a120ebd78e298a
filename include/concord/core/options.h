// Options structs whose keys are declared once.
//
// A component's options are a plain struct with its defaults in place (CONVENTIONS.md). Its
// config keys are declared once, in an OptionsSchema<T> built from member pointers: the key's
// name, the member it fills, its help and its validation. Everything else follows from that one
// declaration:
//   - the key's type, from the member's C++ type (bool, integers, floating point, std::string,
//     std::vector of those, std::optional of those, Json for free-form values, enums through
//     enum_field, nested option structs through section);
//   - its default, from a default-constructed T (so the struct stays the one place for defaults);
//   - config_schema(): the ConfigSchema (core/config.h) run configs are resolved against, with its
//     "unknown key 'top_kk' (did you mean 'top_k'?)" errors, --set overrides and describe();
//   - from_json() / read(): a T from a config; to_json(): a T back as JSON (from_json(to_json(v))
//     gives v back);
//   - validate(): the same checks on a T built in code, so an API call and a config file are held
//     to the same rules.
// Every error about a key or a value is a concord::ConfigError naming the source (file name,
// "--set ...", or what the caller passes) and the key path.
//
// Example:
//
//   struct ScoreOptions {
//     std::string prompt_template = "Question: {instruction}\nAnswer: ";
//     int64_t batch_size = 16;
//     double temperature = 1.0;
//     std::string mode = "grape";
//     std::vector<std::string> languages;    // empty: all
//     std::optional<int64_t> pad_token_id;   // absent: null
//   };
//
//   const OptionsSchema<ScoreOptions>& score_options_schema() {
//     static const OptionsSchema<ScoreOptions> schema = [] {
//       OptionsSchema<ScoreOptions> s("scoring");
//       s.field("template", &ScoreOptions::prompt_template, "format with {instruction}")
//           .field("batch_size", &ScoreOptions::batch_size, "responses per pass", opt::at_least(1))
//           .field("temperature", &ScoreOptions::temperature, "> 0", opt::greater_than(0))
//           .field("mode", &ScoreOptions::mode, "selection", opt::one_of({"grape", "random"}))
//           .field("languages", &ScoreOptions::languages, "folders (empty: all)")
//           .field("pad_token_id", &ScoreOptions::pad_token_id, "padding id (null: the model's)");
//       return s;
//     }();
//     return schema;
//   }
//
//   ScoreOptions o = score_options_schema().from_json(json, "run.json");  // validated, defaults filled
//   Json back = score_options_schema().to_json(o);                         // every key
//   score_options_schema().validate(o, "ScoreOptions");                    // a struct built in code
//
//   // A task's schema reuses it: the same keys at the task's top level, or as a section.
//   struct TaskOptions { std::string model; ScoreOptions scoring; };
//   OptionsSchema<TaskOptions> t;
//   t.field("model", &TaskOptions::model, "model folder", opt::required())
//       .include(&TaskOptions::scoring, score_options_schema());  // or .section("scoring", ...)
//
// Rules (opt::...): required(), one_of({...}) for strings (each element of a string array),
// at_least / greater_than / at_most / less_than / in_range for numbers (each element of a number
// array); several rules combine. Unsigned members are held to >= 0 without saying so. A member
// of a member (TrainerOptions::optimizer.lr as key "lr") is field(name, &T::outer, &Outer::inner,
// ...).
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "concord/core/config.h"
#include "concord/core/error.h"

namespace concord {

/// The validation of one key; the opt:: helpers make one each, and a declaration may give several.
struct OptionRule {
  bool required = false;
  std::vector<std::string> choices;
  std::optional<double> minimum, maximum;
  bool exclusive_minimum = false;
  bool exclusive_maximum = false;
};

namespace opt {
/// The key must be given (no default).
inline OptionRule required() {
  OptionRule r;
  r.required = true;
  return r;
}
/// A string (or every string of an array) must be one of `choices`.
inline OptionRule one_of(std::vector<std::string> choices) {
  OptionRule r;
  r.choices = std::move(choices);
  return r;
}
/// value >= v
inline OptionRule at_least(double v) {
  OptionRule r;
  r.minimum = v;
  return r;
}
/// value > v
inline OptionRule greater_than(double v) {
  OptionRule r;
  r.minimum = v;
  r.exclusive_minimum = true;
  return r;
}
/// value <= v
inline OptionRule at_most(double v) {
  OptionRule r;
  r.maximum = v;
  return r;
}
/// value < v
inline OptionRule less_than(double v) {
  OptionRule r;
  r.maximum = v;
  r.exclusive_maximum = true;
  return r;
}
/// lo <= value <= hi
inline OptionRule in_range(double lo, double hi) {
  OptionRule r;
  r.minimum = lo;
  r.maximum = hi;
  return r;
}
}  // namespace opt

namespace detail {

// Keeps a parameter out of template argument deduction (std::type_identity_t is C++20).
template <typename X>
struct NonDeduced {
  using type = X;
};
template <typename X>
using non_deduced_t = typename NonDeduced<X>::type;

template <typename M, typename = void>
struct OptionTraits {
  static_assert(sizeof(M) == 0,
                "OptionsSchema: no config type for this member type (use enum_field for enums, "
                "section for option structs)");
};

template <>
struct OptionTraits<bool> {
  static constexpr ConfigType type = ConfigType::Bool;
  static Json to_json(bool v) { return v; }
  static bool from_json(const Json& j) { return j.get<bool>(); }
};

template <typename M>
struct OptionTraits<M, std::enable_if_t<std::is_integral_v<M> && !std::is_same_v<M, bool>>> {
  static constexpr ConfigType type = ConfigType::Int;
  static Json to_json(M v) { return v; }
  static M from_json(const Json& j) { return j.get<M>(); }
};

template <typename M>
struct OptionTraits<M, std::enable_if_t<std::is_floating_point_v<M>>> {
  static constexpr ConfigType type = ConfigType::Float;
  static Json to_json(M v) { return v; }
  static M from_json(const Json& j) { return j.get<M>(); }
};

template <>
struct OptionTraits<std::string> {
  static constexpr ConfigType type = ConfigType::String;
  static Json to_json(const std::string& v) { return v; }
  static std::string from_json(const Json& j) { return j.get<std::string>(); }
};

template <>
struct OptionTraits<Json> {
  static constexpr ConfigType type = ConfigType::Any;
  static Json to_json(const Json& v) { return v; }
  static Json from_json(const Json& j) { return j; }
};

template <typename E>
struct OptionTraits<std::vector<E>> {
  static constexpr ConfigType type = ConfigType::Array;
  static constexpr ConfigType element_type = OptionTraits<E>::type;
  static Json to_json(const std::vector<E>& v) {
    Json out = Json::array();
    for (const auto& e : v) out.push_back(OptionTraits<E>::to_json(e));
    return out;
  }
  static std::vector<E> from_json(const Json& j) {
    std::vector<E> out;
    out.reserve(j.size());
    for (const auto& e : j) out.push_back(OptionTraits<E>::from_json(e));
    return out;
  }
};

template <typename E>
struct OptionTraits<std::optional<E>> {
  static constexpr ConfigType type = OptionTraits<E>::type;
  static Json to_json(const std::optional<E>& v) {
    return v ? OptionTraits<E>::to_json(*v) : Json(nullptr);
  }
  static std::optional<E> from_json(const Json& j) {
    if (j.is_null()) return std::nullopt;
    return OptionTraits<E>::from_json(j);
  }
};

// What the range and unsigned checks apply to: the member, or an array's or optional's element.
template <typename M>
struct ElementOf {
  using type = M;
};
template <typename E>
struct ElementOf<std::vector<E>> {
  using type = E;
};
template <typename E>
struct ElementOf<std::optional<E>> {
  using type = E;
};

template <typename M>
struct ArrayElement {
  static constexpr ConfigType type = ConfigType::Any;
};
template <typename E>
struct ArrayElement<std::vector<E>> {
  static constexpr ConfigType type = OptionTraits<E>::type;
};

// The key a member of type M gets: type, element type, and the range that unsigned members
// imply.
template <typename M>
ConfigKey key_for(const std::string& name, const std::string& help) {
  ConfigKey k;
  k.name = name;
  k.help = help;
  k.type = OptionTraits<M>::type;
  k.element_type = ArrayElement<M>::type;
  using E = typename ElementOf<M>::type;
  if constexpr (std::is_integral_v<E> && std::is_unsigned_v<E> && !std::is_same_v<E, bool>) {
    k.minimum = 0.0;
  }
  return k;
}

inline void apply_rule(ConfigKey& k, const OptionRule& r) {
  if (r.required) k.required = true;
  if (!r.choices.empty()) k.choices = r.choices;
  if (r.minimum) {
    k.minimum = r.minimum;
    k.exclusive_minimum = r.exclusive_minimum;
  }
  if (r.maximum) {
    k.maximum = r.maximum;
    k.exclusive_maximum = r.exclusive_maximum;
  }
}

}  // namespace detail

template <typename T>
class OptionsSchema {
  static_assert(std::is_default_constructible_v<T>,
                "OptionsSchema<T>: T's defaults come from T{}, so T must be default-constructible");

 public:
  /// One declared key, type-erased over the member it fills.
  struct Field {
    ConfigKey key;                                    ///< default_value filled by config_schema()
    std::function<Json(const T&)> get;                ///< the member as JSON
    std::function<void(T&, const Json&)> set;         ///< a resolved value into the member
    /// For sections: the nested schema, its defaults taken from a T (null otherwise).
    std::function<ConfigSchema(const T&)> section;
  };

  explicit OptionsSchema(std::string description = "") : description_(std::move(description)) {}

  /// A key filled from `member`. Type from the member's type, default from T{}.
  template <typename M, typename... Rules>
  OptionsSchema& field(const std::string& name, M T::*member, const std::string& help,
                       const Rules&... rules) {
    Field f;
    f.key = detail::key_for<M>(name, help);
    (detail::apply_rule(f.key, rules), ...);
    f.get = [member](const T& t) { return detail::OptionTraits<M>::to_json(t.*member); };
    f.set = [member](T& t, const Json& j) { t.*member = detail::OptionTraits<M>::from_json(j); };
    return add(std::move(f));
  }

  /// A key filled from a member of a member: field("lr", &TrainerOptions::optimizer,
  /// &AdamWOptions::lr, ...).
  template <typename S, typename M, typename... Rules>
  OptionsSchema& field(const std::string& name, S T::*outer, M S::*member,
                       const std::string& help, const Rules&... rules) {
    Field f;
    f.key = detail::key_for<M>(name, help);
    (detail::apply_rule(f.key, rules), ...);
    f.get = [outer, member](const T& t) {
      return detail::OptionTraits<M>::to_json((t.*outer).*member);
    };
    f.set = [outer, member](T& t, const Json& j) {
      (t.*outer).*member = detail::OptionTraits<M>::from_json(j);
    };
    return add(std::move(f));
  }

  /// An enum member, written in configs as one of `names`.
  template <typename E>
  OptionsSchema& enum_field(const std::string& name, E T::*member,
                            std::vector<std::pair<std::string, E>> names, const std::string& help) {
    static_assert(std::is_enum_v<E>, "enum_field: the member must be an enum");
    Field f;
    f.key.name = name;
    f.key.help = help;
    f.key.type = ConfigType::String;
    for (const auto& [n, v] : names) f.key.choices.push_back(n);
    f.get = [member, names](const T& t) {
      for (const auto& [n, v] : names) {
        if (v == t.*member) return Json(n);
      }
      fail("OptionsSchema: enum value ", static_cast<long long>(t.*member), " has no name");
    };
    f.set = [member, names](T& t, const Json& j) {
      const std::string s = j.get<std::string>();
      for (const auto& [n, v] : names) {
        if (n == s) t.*member = v;
      }
    };
    return add(std::move(f));
  }

  /// A nested object `name` filled from the option struct `member`, with `schema`'s keys. Its
  /// defaults are T{}'s member (which may differ from S{}).
  template <typename S>
  OptionsSchema& section(const std::string& name, S T::*member, const OptionsSchema<S>& schema,
                         const std::string& help) {
    auto sub = std::make_shared<OptionsSchema<S>>(schema);
    Field f;
    f.key.name = name;
    f.key.help = help;
    f.key.type = ConfigType::Object;
    f.get = [member, sub](const T& t) { return sub->to_json(t.*member); };
    f.set = [member, sub](T& t, const Json& j) { t.*member = sub->read(j); };
    f.section = [member, sub](const T& d) { return sub->config_schema_for(d.*member); };
    return add(std::move(f));
  }

  /// Every key of `schema` (but those in `except`) at this level, filling `member`: a task's
  /// flat config reusing a component's declaration.
  template <typename S>
  OptionsSchema& include(S T::*member, const OptionsSchema<S>& schema,
                         const std::vector<std::string>& except = {}) {
    for (const auto& name : except) {
      CONCORD_CHECK(schema.find(name) != nullptr, "OptionsSchema::include: '", name,
                    "' is not a key of ", schema.description());
    }
    for (const auto& sf : schema.fields()) {
      if (std::find(except.begin(), except.end(), sf.key.name) != except.end()) continue;
      Field f;
      f.key = sf.key;
      auto get = sf.get;
      auto set = sf.set;
      f.get = [member, get](const T& t) { return get(t.*member); };
      f.set = [member, set](T& t, const Json& j) { set(t.*member, j); };
      if (sf.section) {
        auto section = sf.section;
        f.section = [member, section](const T& d) { return section(d.*member); };
      }
      add(std::move(f));
    }
    return *this;
  }

  /// The ConfigSchema of these keys, defaults from T{}.
  ConfigSchema config_schema() const { return config_schema_for(T{}); }

  /// The ConfigSchema with the defaults of `defaults` (sections use their parent's member).
  ConfigSchema config_schema_for(const T& defaults) const {
    ConfigSchema s(description_);
    for (const auto& f : fields_) {
      ConfigKey k = f.key;
      if (f.section) {
        k.section = std::make_shared<ConfigSchema>(f.section(defaults));
        k.default_value = Json::object();
      } else if (!k.required) {
        k.default_value = f.get(defaults);
      }
      s.key(std::move(k));
    }
    return s;
  }

  /// Validates `json` against the declared keys (unknown keys with "did you mean", types,
  /// choices, ranges, required keys; ConfigErrors that start with `source`) and reads it; absent
  /// keys keep T{}'s values.
  T from_json(const Json& json, const std::string& source) const {
    return read(config_schema().resolve(json, source));
  }

  /// Reads the declared keys of a config that config_schema() (or a schema that includes its
  /// keys, such as a task's) has already resolved; other keys are left alone.
  T read(const Json& resolved) const {
    T t{};
    for (const auto& f : fields_) {
      auto it = resolved.find(f.key.name);
      if (it != resolved.end() && !it->is_null()) f.set(t, *it);
    }
    return t;
  }

  /// Every declared key of `value`.
  Json to_json(const T& value) const {
    Json out = Json::object();
    for (const auto& f : fields_) out[f.key.name] = f.get(value);
    return out;
  }

  /// Holds a T built in code to the declared rules: a ConfigError naming `source` and the key.
  void validate(const T& value, const std::string& source) const {
    (void)config_schema().resolve(to_json(value), source);
  }

  const std::vector<Field>& fields() const { return fields_; }
  const Field* find(const std::string& name) const {
    for (const auto& f : fields_) {
      if (f.key.name == name) return &f;
    }
    return nullptr;
  }
  const std::string& description() const { return description_; }

 private:
  OptionsSchema& add(Field f) {
    CONCORD_CHECK(find(f.key.name) == nullptr, "OptionsSchema ", description_, ": key '",
                  f.key.name, "' declared twice");
    fields_.push_back(std::move(f));
    return *this;
  }

  std::string description_;
  std::vector<Field> fields_;
};

}  // namespace concord
