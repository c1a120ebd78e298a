// Command-line flags shared by the benchmarks. A benchmark names each flag with the variable it
// sets (`--name VALUE`, a switch `--name`, a repeated flag, or positional arguments), and
// parse() does the rest: a value that does not parse whole ("12x", "" for a number), a flag
// without its value, an unknown flag or a missing positional is one line on stderr, then the
// usage line, and main returns 2. The usage line shows the defaults: the variables' values
// before parsing.
#pragma once
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace concord::bench {

class Flags {
 public:
  explicit Flags(std::string program) : program_(std::move(program)) {}

  /// `--name VALUE` for an integer, a number, a string or an optional string.
  Flags& add(const std::string& name, int64_t* out) {
    return custom(name, std::to_string(*out), [out](const std::string& v) {
      return parse_int(v, INT64_MIN, INT64_MAX, out);
    });
  }
  Flags& add(const std::string& name, int* out) {
    return custom(name, std::to_string(*out), [out](const std::string& v) {
      int64_t x = 0;
      if (!parse_int(v, INT_MIN, INT_MAX, &x)) return false;
      *out = static_cast<int>(x);
      return true;
    });
  }
  Flags& add(const std::string& name, double* out) {
    std::ostringstream shown;
    shown << *out;
    return custom(name, shown.str(), [out](const std::string& v) {
      char* end = nullptr;
      errno = 0;
      const double x = std::strtod(v.c_str(), &end);
      if (v.empty() || errno != 0 || *end != '\0') return false;
      *out = x;
      return true;
    });
  }
  Flags& add(const std::string& name, std::string* out) {
    return custom(name, out->empty() ? "TEXT" : *out, [out](const std::string& v) {
      *out = v;
      return true;
    });
  }
  Flags& add(const std::string& name, std::optional<std::string>* out) {
    return custom(name, "TEXT", [out](const std::string& v) {
      *out = v;
      return true;
    });
  }
  /// `--name 0|1`: a boolean given as a value (the Python drivers pass 0 or 1).
  Flags& add(const std::string& name, bool* out) {
    return custom(name, *out ? "1" : "0", [out](const std::string& v) {
      if (v != "0" && v != "1") return false;
      *out = v == "1";
      return true;
    });
  }
  /// `--name VALUE`, repeatable: each occurrence appends.
  Flags& add(const std::string& name, std::vector<std::string>* out) {
    return custom(name, "TEXT", [out](const std::string& v) {
      out->push_back(v);
      return true;
    });
  }
  /// `--name VALUE` parsed by `set`, which returns false for a value it refuses.
  Flags& custom(const std::string& name, std::string shown,
                std::function<bool(const std::string&)> set) {
    flags_.push_back({name, true, std::move(shown), std::move(set)});
    return *this;
  }
  /// `--name` alone: sets *out to `to` (a `--no-...` switch passes false).
  Flags& on(const std::string& name, bool* out, bool to = true) {
    flags_.push_back({name, false, "", [out, to](const std::string&) {
                        *out = to;
                        return true;
                      }});
    return *this;
  }
  /// A required argument before the flags, in the order declared.
  Flags& positional(const std::string& name, std::string* out) {
    positionals_.push_back({name, out});
    return *this;
  }

  /// Parses argv[1..argc-1]. False, with the error and the usage on stderr, on any bad input.
  bool parse(int argc, char** argv) const {
    int i = 1;
    for (const auto& p : positionals_) {
      if (i >= argc || is_flag(argv[i])) return fail("missing " + p.name);
      *p.out = argv[i++];
    }
    for (; i < argc; ++i) {
      const std::string arg = argv[i];
      const Flag* flag = find(arg);
      if (flag == nullptr) return fail("unknown " + std::string(is_flag(arg) ? "flag " : "argument ") + arg);
      std::string value;
      if (flag->takes_value) {
        if (i + 1 >= argc) return fail(arg + " needs a value");
        value = argv[++i];
      }
      if (!flag->set(value)) return fail(arg + ": cannot use '" + value + "'");
    }
    return true;
  }

  /// "usage: PROGRAM POSITIONAL... [--name DEFAULT]... [--switch]..."
  std::string usage() const {
    std::string u = "usage: " + program_;
    for (const auto& p : positionals_) u += " " + p.name;
    for (const auto& f : flags_) {
      u += " [--" + f.name + (f.takes_value ? " " + f.shown : std::string()) + "]";
    }
    return u;
  }

 private:
  struct Flag {
    std::string name;
    bool takes_value;
    std::string shown;  // the default, as the usage line shows it
    std::function<bool(const std::string&)> set;
  };
  struct Positional {
    std::string name;
    std::string* out;
  };

  static bool is_flag(const std::string& arg) { return arg.size() > 2 && arg.compare(0, 2, "--") == 0; }

  static bool parse_int(const std::string& v, int64_t lo, int64_t hi, int64_t* out) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || errno != 0 || *end != '\0' || x < lo || x > hi) return false;
    *out = x;
    return true;
  }

  const Flag* find(const std::string& arg) const {
    if (!is_flag(arg)) return nullptr;
    for (const auto& f : flags_) {
      if (arg.compare(2, std::string::npos, f.name) == 0) return &f;
    }
    return nullptr;
  }

  bool fail(const std::string& what) const {
    std::fprintf(stderr, "%s: %s\n%s\n", program_.c_str(), what.c_str(), usage().c_str());
    return false;
  }

  std::string program_;
  std::vector<Flag> flags_;
  std::vector<Positional> positionals_;
};

}  // namespace concord::bench
