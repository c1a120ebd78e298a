#include "concord/text/bpe_tokenizer.h"

#include <nlohmann/json.hpp>

#include <array>
#include <climits>
#include <cstring>
#include <fstream>
#include <mutex>
#include <queue>
#include <shared_mutex>
#include <sstream>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "concord/core/error.h"
#include "concord/text/regex.h"
#include "concord/text/unicode.h"
#include "concord/text/utf8.h"

namespace concord::text {

using json = nlohmann::json;

namespace {

// ---- small utilities ----------------------------------------------------------------------

// A non-owning callable reference: the pre-tokenizer callbacks run per word, where
// std::function's type erasure (and possible allocation) would show in profiles.
template <typename Sig>
class FunctionRef;
template <typename R, typename... A>
class FunctionRef<R(A...)> {
 public:
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)  // NOLINT: implicit on purpose, like std::function
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

// Rust's char::is_whitespace (the White_Space property), which lstrip/rstrip use.
bool is_whitespace(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Regex \w as the Rust regex crate defines it (single_word added tokens use \w$ and ^\w).
bool is_word_char(std::string_view ch) {
  static const Regex word(R"(^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])");
  size_t b, e;
  return word.find(ch, 0, b, e);
}

// Start of the last character of well-formed `s` (s non-empty).
size_t last_char_start(std::string_view s) {
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100.. in order,
// so every byte has a visible, non-space character in vocab files.
struct ByteMap {
  std::array<char32_t, 256> byte_to_char{};
  std::array<std::string, 256> byte_to_utf8;
  std::unordered_map<char32_t, uint8_t> char_to_byte;
  ByteMap() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      byte_to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      utf8::append(byte_to_utf8[b], byte_to_char[b]);
      char_to_byte[byte_to_char[b]] = static_cast<uint8_t>(b);
    }
  }
  // The raw bytes a byte-level token stands for; false if a character is outside the map.
  bool to_bytes(std::string_view token, std::string& out) const {
    out.clear();
    size_t i = 0;
    while (i < token.size()) {
      auto it = char_to_byte.find(utf8::next(token, i));
      if (it == char_to_byte.end()) return false;
      out.push_back(static_cast<char>(it->second));
    }
    return true;
  }
};
const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

// Open-addressing map from a pair of token ids to (merge rank, merged id). Lookups of pairs are
// the inner loop of BPE; std::unordered_map costs a pointer chase per probe.
class PairMap {
 public:
  struct Value {
    int32_t rank;
    TokenId id;
  };
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;
    keys_.assign(cap, kEmpty);
    values_.assign(cap, Value{0, 0});
    mask_ = cap - 1;
  }
  // Keeps the first insertion (the lowest rank) when a pair repeats, as HF does.
  void insert(TokenId a, TokenId b, Value v) {
    const uint64_t key = make_key(a, b);
    size_t i = hash(key) & mask_;
    while (keys_[i] != kEmpty) {
      if (keys_[i] == key) return;
      i = (i + 1) & mask_;
    }
    keys_[i] = key;
    values_[i] = v;
  }
  const Value* find(TokenId a, TokenId b) const {
    const uint64_t key = make_key(a, b);
    size_t i = hash(key) & mask_;
    while (true) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ULL;
  static uint64_t make_key(TokenId a, TokenId b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t mask_ = 0;
};

// ---- JSON access with key paths in every message --------------------------------------------

struct Ctx {
  std::string file;
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    fail_format(file, "key ", path, ": ", what);
  }
  const json& member(const json& obj, const std::string& key, const std::string& path) const {
    if (!obj.is_object()) fail(path, "expected an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(path + "." + key, "missing");
    return *it;
  }
  std::string string(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = member(obj, key, path);
    if (!v.is_string()) fail(path + "." + key, "expected a string");
    return v.get<std::string>();
  }
  bool boolean(const json& obj, const std::string& key, const std::string& path, bool dflt) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return dflt;
    if (!it->is_boolean()) fail(path + "." + key, "expected true or false");
    return it->get<bool>();
  }
  int64_t integer(const json& obj, const std::string& key, const std::string& path, int64_t lo,
                  int64_t hi) const {
    const json& v = member(obj, key, path);
    if (!v.is_number_integer()) fail(path + "." + key, "expected an integer");
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(path + "." + key, "value " + std::to_string(x) + " out of range");
    return x;
  }
  std::string type(const json& obj, const std::string& path) const {
    return string(obj, "type", path);
  }
  const json& array(const json& obj, const std::string& key, const std::string& path) const {
    const json& v = member(obj, key, path);
    if (!v.is_array()) fail(path + "." + key, "expected an array");
    return v;
  }
};

// A "pattern" field: {"String": "..."} or {"Regex": "..."}.
struct Pattern {
  bool is_regex = false;
  std::string literal;
  std::shared_ptr<Regex> regex;
};
Pattern parse_pattern(const Ctx& ctx, const json& obj, const std::string& path) {
  const json& p = ctx.member(obj, "pattern", path);
  Pattern out;
  if (p.is_object() && p.contains("String") && p["String"].is_string()) {
    out.literal = p["String"].get<std::string>();
    if (out.literal.empty()) ctx.fail(path + ".pattern.String", "empty pattern");
  } else if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) {
    out.is_regex = true;
    out.regex = std::make_shared<Regex>(p["Regex"].get<std::string>(),
                                        ctx.file + ": key " + path + ".pattern.Regex");
  } else {
    ctx.fail(path + ".pattern", "expected {\"String\": ...} or {\"Regex\": ...}");
  }
  return out;
}

// Calls fn(begin, end) for each non-overlapping match of `p` in `s`.
template <typename Fn>
void for_each_pattern_match(const Pattern& p, std::string_view s, Fn&& fn) {
  if (p.is_regex) {
    p.regex->for_each_match(s, fn);
    return;
  }
  size_t pos = 0;
  while ((pos = s.find(p.literal, pos)) != std::string_view::npos) {
    fn(pos, pos + p.literal.size());
    pos += p.literal.size();
  }
}

std::string replace_all(const Pattern& p, std::string_view s, std::string_view content) {
  std::string out;
  out.reserve(s.size());
  size_t last = 0;
  for_each_pattern_match(p, s, [&](size_t b, size_t e) {
    out.append(s.substr(last, b - last));
    out.append(content);
    last = e;
  });
  out.append(s.substr(last));
  return out;
}

// ---- normalizers -----------------------------------------------------------------------------

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual void apply(std::string& s) const = 0;
};
struct PrependNormalizer : Normalizer {
  std::string prepend;
  void apply(std::string& s) const override {
    if (!s.empty()) s.insert(0, prepend);
  }
};
struct ReplaceNormalizer : Normalizer {
  Pattern pattern;
  std::string content;
  void apply(std::string& s) const override { s = replace_all(pattern, s, content); }
};
struct UnicodeNormalizer : Normalizer {
  unicode::NormalForm form = unicode::NormalForm::nfc;
  void apply(std::string& s) const override { s = unicode::normalize(s, form); }
};
struct LowercaseNormalizer : Normalizer {
  void apply(std::string& s) const override { s = unicode::lowercase(s); }
};
struct SequenceNormalizer : Normalizer {
  std::vector<std::unique_ptr<Normalizer>> steps;
  void apply(std::string& s) const override {
    for (const auto& n : steps) n->apply(s);
  }
};

std::unique_ptr<Normalizer> parse_normalizer(const Ctx& ctx, const json& j, const std::string& path) {
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    const json& list = ctx.array(j, "normalizers", path);
    for (size_t i = 0; i < list.size(); ++i) {
      seq->steps.push_back(
          parse_normalizer(ctx, list[i], path + ".normalizers[" + std::to_string(i) + "]"));
    }
    return seq;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prepend = ctx.string(j, "prepend", path);
    return n;
  }
  if (type == "Replace") {
    auto n = std::make_unique<ReplaceNormalizer>();
    n->pattern = parse_pattern(ctx, j, path);
    n->content = ctx.string(j, "content", path);
    return n;
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    auto n = std::make_unique<UnicodeNormalizer>();
    n->form = type == "NFC"    ? unicode::NormalForm::nfc
              : type == "NFD"  ? unicode::NormalForm::nfd
              : type == "NFKC" ? unicode::NormalForm::nfkc
                               : unicode::NormalForm::nfkd;
    return n;
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  ctx.fail(path + ".type", "unsupported normalizer \"" + type +
                               "\" (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, "
                               "Lowercase)");
}

// ---- pre-tokenizers --------------------------------------------------------------------------

// A word handed to the next step: its text and whether it starts at offset 0 of the input
// (Metaspace's prepend_scheme "first" looks at that).
using Emit = FunctionRef<void(std::string_view, bool)>;

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void split(std::string_view piece, bool at_start, Emit emit) const = 0;
};

enum class SplitBehavior { Isolated, Removed, MergedWithPrevious, MergedWithNext, Contiguous };

// NormalizedString::split of HF tokenizers: `matches` alternates gaps and matches covering the
// piece; each behaviour decides what to keep and what to glue together.
void split_with_behavior(std::string_view piece, bool at_start, SplitBehavior behavior,
                         bool invert, const std::vector<std::tuple<size_t, size_t, bool>>& matches,
                         Emit emit) {
  struct Span {
    size_t b, e;
    bool removed;
  };
  std::vector<Span> spans;
  bool previous_match = false;
  if (behavior == SplitBehavior::MergedWithNext) {
    for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
      auto [b, e, m] = *it;
      m = m != invert;
      if (m && !previous_match && !spans.empty()) {
        spans.back().b = b;
      } else {
        spans.push_back({b, e, false});
      }
      previous_match = m;
    }
    std::reverse(spans.begin(), spans.end());
  } else {
    for (auto [b, e, m] : matches) {
      m = m != invert;
      switch (behavior) {
        case SplitBehavior::Isolated: spans.push_back({b, e, false}); break;
        case SplitBehavior::Removed: spans.push_back({b, e, m}); break;
        case SplitBehavior::Contiguous:
          if (m == previous_match && !spans.empty()) {
            spans.back().e = e;
          } else {
            spans.push_back({b, e, false});
          }
          break;
        case SplitBehavior::MergedWithPrevious:
          if (m && !previous_match && !spans.empty()) {
            spans.back().e = e;
          } else {
            spans.push_back({b, e, false});
          }
          break;
        default: break;
      }
      previous_match = m;
    }
  }
  for (const Span& s : spans) {
    if (s.removed || s.e == s.b) continue;
    emit(piece.substr(s.b, s.e - s.b), at_start && s.b == 0);
  }
}

// Gaps and matches of `p` over `piece`, in order (the list find_matches gives in HF).
template <typename MatchFn>
std::vector<std::tuple<size_t, size_t, bool>> gaps_and_matches(std::string_view piece,
                                                               MatchFn&& for_each) {
  std::vector<std::tuple<size_t, size_t, bool>> out;
  size_t prev = 0;
  for_each([&](size_t b, size_t e) {
    if (prev != b) out.emplace_back(prev, b, false);
    out.emplace_back(b, e, true);
    prev = e;
  });
  if (prev != piece.size()) out.emplace_back(prev, piece.size(), false);
  return out;
}

struct SplitPreTokenizer : PreTokenizer {
  Pattern pattern;
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  void split(std::string_view piece, bool at_start, Emit emit) const override {
    if (behavior == SplitBehavior::Isolated) {
      // Every gap and every match becomes a word: no list needed. (invert changes nothing here.)
      size_t prev = 0;
      for_each_pattern_match(pattern, piece, [&](size_t b, size_t e) {
        if (prev != b) emit(piece.substr(prev, b - prev), at_start && prev == 0);
        emit(piece.substr(b, e - b), at_start && b == 0);
        prev = e;
      });
      if (prev != piece.size()) emit(piece.substr(prev), at_start && prev == 0);
      return;
    }
    auto matches = gaps_and_matches(
        piece, [&](auto&& fn) { for_each_pattern_match(pattern, piece, fn); });
    split_with_behavior(piece, at_start, behavior, invert, matches, emit);
  }
};

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct ByteLevelPreTokenizer : PreTokenizer {
  bool add_prefix_space = false;
  std::shared_ptr<Regex> regex;  // null when use_regex is false
  void split(std::string_view piece, bool at_start, Emit emit) const override {
    std::string buffer;
    if (add_prefix_space && (piece.empty() || piece[0] != ' ')) {
      buffer.reserve(piece.size() + 1);
      buffer.push_back(' ');
      buffer.append(piece);
      piece = buffer;
    }
    if (!regex) {
      emit(piece, at_start);
      return;
    }
    size_t prev = 0;
    regex->for_each_match(piece, [&](size_t b, size_t e) {
      if (prev != b) emit(piece.substr(prev, b - prev), at_start && prev == 0);
      emit(piece.substr(b, e - b), at_start && b == 0);
      prev = e;
    });
    if (prev != piece.size()) emit(piece.substr(prev), at_start && prev == 0);
  }
};

enum class PrependScheme { First, Always, Never };

struct MetaspacePreTokenizer : PreTokenizer {
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  bool split_words = true;
  void split(std::string_view piece, bool at_start, Emit emit) const override {
    std::string buffer;
    buffer.reserve(piece.size() + replacement.size() + 8);
    const bool starts_with_space = !piece.empty() && piece[0] == ' ';
    if (!starts_with_space && (scheme == PrependScheme::Always ||
                               (scheme == PrependScheme::First && at_start))) {
      // HF replaces spaces first and then prepends unless the result starts with the
      // replacement; for the usual "▁" that is the same as checking for a leading space.
      if (piece.substr(0, replacement.size()) != replacement) buffer = replacement;
    }
    for (char c : piece) {
      if (c == ' ') {
        buffer += replacement;
      } else {
        buffer.push_back(c);
      }
    }
    std::string_view text = buffer;
    if (!split_words) {
      emit(text, at_start);
      return;
    }
    Pattern p;
    p.literal = replacement;
    auto matches =
        gaps_and_matches(text, [&](auto&& fn) { for_each_pattern_match(p, text, fn); });
    split_with_behavior(text, at_start, SplitBehavior::MergedWithNext, false, matches, emit);
  }
};

struct SequencePreTokenizer : PreTokenizer {
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  void run(size_t i, std::string_view piece, bool at_start, Emit emit) const {
    if (i == steps.size()) {
      emit(piece, at_start);
      return;
    }
    steps[i]->split(piece, at_start, [&](std::string_view w, bool s) { run(i + 1, w, s, emit); });
  }
  void split(std::string_view piece, bool at_start, Emit emit) const override {
    run(0, piece, at_start, emit);
  }
};

PrependScheme parse_prepend_scheme(const Ctx& ctx, const json& j, const std::string& path) {
  auto it = j.find("prepend_scheme");
  if (it == j.end()) {
    // Files written before prepend_scheme existed carry add_prefix_space instead.
    return ctx.boolean(j, "add_prefix_space", path, true) ? PrependScheme::Always
                                                          : PrependScheme::Never;
  }
  const std::string s = it->is_string() ? it->get<std::string>() : "";
  if (s == "first") return PrependScheme::First;
  if (s == "always") return PrependScheme::Always;
  if (s == "never") return PrependScheme::Never;
  ctx.fail(path + ".prepend_scheme", "expected \"first\", \"always\" or \"never\"");
}

std::string parse_replacement(const Ctx& ctx, const json& j, const std::string& path) {
  std::string r = ctx.string(j, "replacement", path);
  if (r.empty() || utf8::lead_length(static_cast<unsigned char>(r[0])) != r.size()) {
    ctx.fail(path + ".replacement", "expected one character");
  }
  return r;
}

// Parses a pre-tokenizer; `byte_level` is set when its last step is ByteLevel, which tells the
// BPE model to work on raw bytes.
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const Ctx& ctx, const json& j,
                                                  const std::string& path, bool& byte_level,
                                                  bool allow_byte_level) {
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    const json& list = ctx.array(j, "pretokenizers", path);
    for (size_t i = 0; i < list.size(); ++i) {
      bool last_is_byte_level = false;
      seq->steps.push_back(parse_pre_tokenizer(ctx, list[i],
                                               path + ".pretokenizers[" + std::to_string(i) + "]",
                                               last_is_byte_level, i + 1 == list.size()));
      byte_level = last_is_byte_level;
    }
    return seq;
  }
  if (type == "ByteLevel") {
    // Concord runs byte-level BPE on raw bytes, so whatever follows ByteLevel would see other
    // text than in HF; no published tokenizer puts anything after it.
    if (!allow_byte_level) ctx.fail(path + ".type", "ByteLevel must be the last pre-tokenizer");
    auto p = std::make_unique<ByteLevelPreTokenizer>();
    p->add_prefix_space = ctx.boolean(j, "add_prefix_space", path, true);
    if (ctx.boolean(j, "use_regex", path, true)) p->regex = std::make_shared<Regex>(kGpt2Pattern);
    byte_level = true;
    return p;
  }
  if (type == "Split") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->pattern = parse_pattern(ctx, j, path);
    const std::string b = ctx.string(j, "behavior", path);
    if (b == "Isolated") p->behavior = SplitBehavior::Isolated;
    else if (b == "Removed") p->behavior = SplitBehavior::Removed;
    else if (b == "MergedWithPrevious") p->behavior = SplitBehavior::MergedWithPrevious;
    else if (b == "MergedWithNext") p->behavior = SplitBehavior::MergedWithNext;
    else if (b == "Contiguous") p->behavior = SplitBehavior::Contiguous;
    else ctx.fail(path + ".behavior", "unknown behavior \"" + b + "\"");
    p->invert = ctx.boolean(j, "invert", path, false);
    return p;
  }
  if (type == "Metaspace") {
    auto p = std::make_unique<MetaspacePreTokenizer>();
    p->replacement = parse_replacement(ctx, j, path);
    p->scheme = parse_prepend_scheme(ctx, j, path);
    p->split_words = ctx.boolean(j, "split", path, true);
    return p;
  }
  if (type == "Digits") {
    auto p = std::make_unique<SplitPreTokenizer>();
    p->pattern.is_regex = true;
    // char::is_numeric is the N categories; contiguous digits form one word unless
    // individual_digits.
    const bool individual = ctx.boolean(j, "individual_digits", path, false);
    p->pattern.regex = std::make_shared<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)");
    return p;
  }
  ctx.fail(path + ".type", "unsupported pre-tokenizer \"" + type +
                               "\" (supported: Sequence, ByteLevel, Split, Metaspace, Digits)");
}

// ---- decoders --------------------------------------------------------------------------------

struct Decoder {
  virtual ~Decoder() = default;
  virtual void apply(std::vector<std::string>& tokens) const = 0;
};

struct ByteLevelDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string bytes, raw;
    for (const auto& t : tokens) {
      // A token with a character outside the byte map (an added token, say) passes unchanged.
      if (byte_map().to_bytes(t, raw)) {
        bytes += raw;
      } else {
        bytes += t;
      }
    }
    tokens.assign(1, utf8::is_valid(bytes) ? bytes : utf8::replace_invalid(bytes));
  }
};

struct ReplaceDecoder : Decoder {
  Pattern pattern;
  std::string content;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = replace_all(pattern, t, content);
  }
};

// Runs of <0xXX> tokens become their bytes; a run that is not valid UTF-8 becomes one U+FFFD per
// byte token (not per maximal subpart), exactly as HF's ByteFallback does.
struct ByteFallbackDecoder : Decoder {
  static bool byte_token(const std::string& t, unsigned char& b) {
    if (t.size() != 6 || t[0] != '<' || t[1] != '0' || t[2] != 'x' || t[5] != '>') return false;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(t[3]), lo = hex(t[4]);
    if (hi < 0 || lo < 0) return false;
    b = static_cast<unsigned char>(hi * 16 + lo);
    return true;
  }
  void apply(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (utf8::is_valid(run)) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_tokens; ++i) out.emplace_back(utf8::kReplacement);
      }
      run.clear();
      run_tokens = 0;
    };
    for (auto& t : tokens) {
      unsigned char b;
      if (byte_token(t, b)) {
        run.push_back(static_cast<char>(b));
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }
};

struct FuseDecoder : Decoder {
  void apply(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, all);
  }
};

struct StripDecoder : Decoder {
  std::string content;  // one character
  size_t start = 0, stop = 0;
  void apply(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::string_view v = t;
      for (size_t i = 0; i < start && v.substr(0, content.size()) == content; ++i) {
        v.remove_prefix(content.size());
      }
      for (size_t i = 0; i < stop && v.size() >= content.size() &&
                         v.substr(v.size() - content.size()) == content;
           ++i) {
        v.remove_suffix(content.size());
      }
      t = std::string(v);
    }
  }
};

struct MetaspaceDecoder : Decoder {
  std::string replacement;
  PrependScheme scheme = PrependScheme::Always;
  void apply(std::vector<std::string>& tokens) const override {
    // HF drops every replacement character of the first token (not only a leading one).
    for (size_t i = 0; i < tokens.size(); ++i) {
      const bool drop = i == 0 && scheme != PrependScheme::Never;
      Pattern p;
      p.literal = replacement;
      tokens[i] = replace_all(p, tokens[i], drop ? "" : " ");
    }
  }
};

struct SequenceDecoder : Decoder {
  std::vector<std::unique_ptr<Decoder>> steps;
  void apply(std::vector<std::string>& tokens) const override {
    for (const auto& d : steps) d->apply(tokens);
  }
};

std::unique_ptr<Decoder> parse_decoder(const Ctx& ctx, const json& j, const std::string& path) {
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceDecoder>();
    const json& list = ctx.array(j, "decoders", path);
    for (size_t i = 0; i < list.size(); ++i) {
      seq->steps.push_back(parse_decoder(ctx, list[i], path + ".decoders[" + std::to_string(i) + "]"));
    }
    return seq;
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    auto d = std::make_unique<ReplaceDecoder>();
    d->pattern = parse_pattern(ctx, j, path);
    d->content = ctx.string(j, "content", path);
    return d;
  }
  if (type == "Strip") {
    auto d = std::make_unique<StripDecoder>();
    d->content = ctx.string(j, "content", path);
    if (d->content.empty() ||
        utf8::lead_length(static_cast<unsigned char>(d->content[0])) != d->content.size()) {
      ctx.fail(path + ".content", "expected one character");
    }
    d->start = static_cast<size_t>(ctx.integer(j, "start", path, 0, 1 << 20));
    d->stop = static_cast<size_t>(ctx.integer(j, "stop", path, 0, 1 << 20));
    return d;
  }
  if (type == "Metaspace") {
    auto d = std::make_unique<MetaspaceDecoder>();
    d->replacement = parse_replacement(ctx, j, path);
    d->scheme = parse_prepend_scheme(ctx, j, path);
    return d;
  }
  ctx.fail(path + ".type", "unsupported decoder \"" + type +
                               "\" (supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, "
                               "Strip, Metaspace)");
}

// ---- post-processors -------------------------------------------------------------------------

struct PostProcessor {
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<TokenId>& ids) const = 0;
  virtual std::optional<TokenId> first_special() const { return std::nullopt; }
};

// The single-sequence template: literal special-token ids around the sequence "$A".
struct TemplatePostProcessor : PostProcessor {
  std::vector<TokenId> before, after;
  void apply(std::vector<TokenId>& ids) const override {
    ids.insert(ids.begin(), before.begin(), before.end());
    ids.insert(ids.end(), after.begin(), after.end());
  }
  std::optional<TokenId> first_special() const override {
    if (before.empty()) return std::nullopt;
    return before.front();
  }
};

struct NoOpPostProcessor : PostProcessor {
  void apply(std::vector<TokenId>&) const override {}
};

struct SequencePostProcessor : PostProcessor {
  std::vector<std::unique_ptr<PostProcessor>> steps;
  void apply(std::vector<TokenId>& ids) const override {
    for (const auto& p : steps) p->apply(ids);
  }
  std::optional<TokenId> first_special() const override {
    for (const auto& p : steps) {
      if (auto id = p->first_special()) return id;
    }
    return std::nullopt;
  }
};

std::unique_ptr<PostProcessor> parse_post_processor(const Ctx& ctx, const json& j,
                                                    const std::string& path) {
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePostProcessor>();
    const json& list = ctx.array(j, "processors", path);
    for (size_t i = 0; i < list.size(); ++i) {
      seq->steps.push_back(
          parse_post_processor(ctx, list[i], path + ".processors[" + std::to_string(i) + "]"));
    }
    return seq;
  }
  // ByteLevel as a post-processor only trims offsets, which Concord does not return.
  if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();
  if (type == "TemplateProcessing") {
    auto p = std::make_unique<TemplatePostProcessor>();
    const json& specials = ctx.member(j, "special_tokens", path);
    if (!specials.is_object()) ctx.fail(path + ".special_tokens", "expected an object");
    const json& single = ctx.array(j, "single", path);
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string ip = path + ".single[" + std::to_string(i) + "]";
      const json& item = single[i];
      if (item.is_object() && item.contains("Sequence")) {
        const std::string id = ctx.string(item["Sequence"], "id", ip + ".Sequence");
        if (id != "A") ctx.fail(ip + ".Sequence.id", "the single template can only hold $A");
        if (seen_sequence) ctx.fail(ip, "$A appears twice");
        seen_sequence = true;
      } else if (item.is_object() && item.contains("SpecialToken")) {
        const std::string name = ctx.string(item["SpecialToken"], "id", ip + ".SpecialToken");
        const std::string sp = path + ".special_tokens." + name;
        auto it = specials.find(name);
        if (it == specials.end()) ctx.fail(sp, "missing (used in " + ip + ")");
        const json& ids = ctx.array(*it, "ids", sp);
        auto& target = seen_sequence ? p->after : p->before;
        for (size_t k = 0; k < ids.size(); ++k) {
          if (!ids[k].is_number_integer() || ids[k].get<int64_t>() < 0 ||
              ids[k].get<int64_t>() > INT32_MAX) {
            ctx.fail(sp + ".ids[" + std::to_string(k) + "]", "expected a token id");
          }
          target.push_back(static_cast<TokenId>(ids[k].get<int64_t>()));
        }
      } else {
        ctx.fail(ip, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
    return p;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    // cls and sep are ["token", id] pairs: <cls> $A <sep>.
    auto p = std::make_unique<TemplatePostProcessor>();
    for (const char* key : {"cls", "sep"}) {
      const json& v = ctx.member(j, key, path);
      if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer() || v[1].get<int64_t>() < 0 ||
          v[1].get<int64_t>() > INT32_MAX) {
        ctx.fail(path + "." + key, "expected [token, id]");
      }
      (std::string(key) == "cls" ? p->before : p->after)
          .push_back(static_cast<TokenId>(v[1].get<int64_t>()));
    }
    return p;
  }
  ctx.fail(path + ".type", "unsupported post-processor \"" + type +
                               "\" (supported: Sequence, ByteLevel, TemplateProcessing, "
                               "RobertaProcessing, BertProcessing)");
}

// ---- added tokens ----------------------------------------------------------------------------

struct AddedToken {
  TokenId id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

// Leftmost-longest matching of added tokens (the Aho-Corasick MatchKind HF uses), as a byte trie.
class AddedMatcher {
 public:
  void add(const std::string& pattern, size_t token_index) {
    if (pattern.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    size_t node = 0;
    for (unsigned char c : pattern) {
      auto& children = nodes_[node].children;
      auto it = std::find_if(children.begin(), children.end(),
                             [c](const auto& p) { return p.first == c; });
      if (it == children.end()) {
        children.emplace_back(c, nodes_.size());
        nodes_.emplace_back();
        node = nodes_.size() - 1;
      } else {
        node = it->second;
      }
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int64_t>(token_index);
    first_byte_[static_cast<unsigned char>(pattern[0])] = true;
  }
  bool empty() const { return nodes_.empty(); }

  // Longest match starting at `pos`: returns its length and sets `token`, or returns 0.
  size_t match_at(std::string_view s, size_t pos, size_t& token) const {
    if (!first_byte_[static_cast<unsigned char>(s[pos])]) return 0;
    size_t node = 0, best = 0;
    for (size_t i = pos; i < s.size(); ++i) {
      const auto& children = nodes_[node].children;
      const unsigned char c = static_cast<unsigned char>(s[i]);
      auto it = std::find_if(children.begin(), children.end(),
                             [c](const auto& p) { return p.first == c; });
      if (it == children.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = i + 1 - pos;
        token = static_cast<size_t>(nodes_[node].token);
      }
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, size_t>> children;
    int64_t token = -1;
  };
  std::vector<Node> nodes_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace

// ---- the tokenizer ---------------------------------------------------------------------------

struct BpeTokenizer::Impl {
  std::string name;

  // model
  std::unordered_map<std::string, TokenId> vocab;  // model vocab, strings as in the file
  std::unordered_map<std::string, TokenId> raw_vocab;  // keyed by raw bytes (byte-level models)
  std::vector<std::string> id_to_token;            // model and added tokens ("" = no token)
  std::vector<uint8_t> has_token;
  PairMap merges;
  bool byte_level = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  bool fuse_unk = false;
  std::string continuing_subword_prefix, end_of_word_suffix;
  std::optional<TokenId> unk_id;
  std::array<TokenId, 256> byte_ids{};           // byte-level: id of each byte's character
  std::array<TokenId, 256> fallback_ids{};       // byte_fallback: id of <0xXX>, -1 if absent
  bool all_fallback_ids = false;

  // pipeline
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, TokenId> added_vocab;
  AddedMatcher raw_matcher, normalized_matcher;
  std::unordered_set<TokenId> special_ids;
  std::optional<TokenId> bos, eos, pad;

  // word cache: words up to kCacheWordBytes, at most kCacheEntries of them (then no inserts)
  static constexpr size_t kCacheWordBytes = 64;
  static constexpr size_t kCacheEntries = 1 << 16;
  mutable std::shared_mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<TokenId>> cache;

  void parse(const json& root, const Ctx& ctx);
  void parse_model(const json& model, const Ctx& ctx);
  void parse_added_tokens(const json& list, const Ctx& ctx);
  void pick_special_ids(const json* config);

  void initial_symbols(std::string_view word, std::vector<TokenId>& symbols) const;
  void merge_simple(std::vector<TokenId>& symbols) const;
  void merge_heap(std::vector<TokenId>& symbols) const;
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;
  void encode_piece(std::string_view piece, bool at_start, std::vector<TokenId>& out) const;
  template <typename Fn>
  void split_added(const AddedMatcher& matcher, std::string_view s, Fn&& fn) const;
};

void BpeTokenizer::Impl::parse_model(const json& model, const Ctx& ctx) {
  const std::string path = "model";
  if (!model.is_object()) ctx.fail(path, "expected an object");
  if (model.contains("type")) {
    const std::string type = ctx.type(model, path);
    if (type != "BPE") {
      ctx.fail("model.type", "unsupported model \"" + type + "\" (only BPE is supported)");
    }
  } else if (!model.contains("merges")) {
    ctx.fail("model.type", "missing (and no merges: not a BPE model)");
  }
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    if (!model["dropout"].is_number() || model["dropout"].get<double>() != 0.0) {
      ctx.fail("model.dropout", "BPE dropout is not supported (encoding would be random)");
    }
  }
  // CLIP's BPE marks the last symbol of each word ("a</w>"); WordPiece-style models mark the
  // others ("##a"). Both change the initial symbols only.
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null()) {
      if (!model[key].is_string()) ctx.fail(std::string("model.") + key, "expected a string or null");
      (std::string(key) == "end_of_word_suffix" ? end_of_word_suffix : continuing_subword_prefix) =
          model[key].get<std::string>();
    }
  }
  byte_fallback = ctx.boolean(model, "byte_fallback", path, false);
  ignore_merges = ctx.boolean(model, "ignore_merges", path, false);
  fuse_unk = ctx.boolean(model, "fuse_unk", path, false);

  const json& v = ctx.member(model, "vocab", path);
  if (!v.is_object()) ctx.fail("model.vocab", "expected an object of token: id");
  int64_t max_id = -1;
  vocab.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      ctx.fail("model.vocab." + it.key(), "expected a token id (an integer >= 0)");
    }
    const int64_t id = it.value().get<int64_t>();
    vocab.emplace(it.key(), static_cast<TokenId>(id));
    max_id = std::max(max_id, id);
  }
  if (max_id >= static_cast<int64_t>(4 * vocab.size() + 1024)) {
    ctx.fail("model.vocab", "ids are too sparse (largest " + std::to_string(max_id) + " for " +
                                std::to_string(vocab.size()) + " tokens)");
  }
  id_to_token.assign(static_cast<size_t>(max_id + 1), std::string());
  has_token.assign(static_cast<size_t>(max_id + 1), 0);
  for (const auto& [token, id] : vocab) {
    if (has_token[id]) ctx.fail("model.vocab." + token, "id " + std::to_string(id) + " repeats");
    id_to_token[id] = token;
    has_token[id] = 1;
  }

  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    if (!model["unk_token"].is_string()) ctx.fail("model.unk_token", "expected a string");
    auto it = vocab.find(model["unk_token"].get<std::string>());
    if (it == vocab.end()) ctx.fail("model.unk_token", "not in the vocabulary");
    unk_id = it->second;
  }

  const json& m = ctx.array(model, "merges", path);
  merges.reserve(m.size());
  for (size_t i = 0; i < m.size(); ++i) {
    const std::string mp = "model.merges[" + std::to_string(i) + "]";
    std::string a, b;
    if (m[i].is_string()) {
      const std::string s = m[i].get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        ctx.fail(mp, "expected \"a b\" (two tokens and one space)");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m[i].is_array() && m[i].size() == 2 && m[i][0].is_string() && m[i][1].is_string()) {
      a = m[i][0].get<std::string>();
      b = m[i][1].get<std::string>();
    } else {
      ctx.fail(mp, "expected \"a b\" or [\"a\", \"b\"]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end()) ctx.fail(mp, "token not in the vocabulary");
    if (iab == vocab.end()) ctx.fail(mp, "merged token \"" + a + b + "\" not in the vocabulary");
    merges.insert(ia->second, ib->second, PairMap::Value{static_cast<int32_t>(i), iab->second});
  }

  fallback_ids.fill(-1);
  all_fallback_ids = true;
  for (int byte = 0; byte < 256; ++byte) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", byte);
    auto it = vocab.find(name);
    if (it != vocab.end()) {
      fallback_ids[byte] = it->second;
    } else {
      all_fallback_ids = false;
    }
  }
}

void BpeTokenizer::Impl::parse_added_tokens(const json& list, const Ctx& ctx) {
  if (!list.is_array()) ctx.fail("added_tokens", "expected an array");
  // Ids may leave gaps past the model's vocabulary, but the table they index grows by at most
  // 4 entries per added token plus 1024 in all: a bound on each id relative to the table's size
  // so far would let n tokens, each far past the last, grow it quadratically in the file's size.
  const size_t id_limit = id_to_token.size() + 4 * list.size() + 1024;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string p = "added_tokens[" + std::to_string(i) + "]";
    AddedToken t;
    t.id = static_cast<TokenId>(ctx.integer(list[i], "id", p, 0, INT32_MAX));
    t.content = ctx.string(list[i], "content", p);
    if (t.content.empty()) ctx.fail(p + ".content", "empty token");
    t.single_word = ctx.boolean(list[i], "single_word", p, false);
    t.lstrip = ctx.boolean(list[i], "lstrip", p, false);
    t.rstrip = ctx.boolean(list[i], "rstrip", p, false);
    t.normalized = ctx.boolean(list[i], "normalized", p, true);
    t.special = ctx.boolean(list[i], "special", p, false);
    if (static_cast<size_t>(t.id) >= id_to_token.size()) {
      if (static_cast<size_t>(t.id) >= id_limit) {
        ctx.fail(p + ".id", "id " + std::to_string(t.id) + " is far beyond the vocabulary (" +
                                std::to_string(id_to_token.size()) + " ids so far, " +
                                std::to_string(list.size()) + " added tokens)");
      }
      id_to_token.resize(static_cast<size_t>(t.id) + 1);
      has_token.resize(static_cast<size_t>(t.id) + 1, 0);
    }
    id_to_token[t.id] = t.content;
    has_token[t.id] = 1;
    added_vocab[t.content] = t.id;
    if (t.special) special_ids.insert(t.id);
    added.push_back(std::move(t));
  }
  // Normalized tokens are looked for in normalized text, so their patterns are normalized too.
  for (size_t i = 0; i < added.size(); ++i) {
    if (!added[i].normalized) {
      raw_matcher.add(added[i].content, i);
    } else {
      std::string pattern = added[i].content;
      if (normalizer) normalizer->apply(pattern);
      normalized_matcher.add(pattern, i);
    }
  }
}

void BpeTokenizer::Impl::parse(const json& root, const Ctx& ctx) {
  if (!root.is_object()) ctx.fail("(root)", "expected a JSON object");
  parse_model(ctx.member(root, "model", "(root)"), ctx);
  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    normalizer = parse_normalizer(ctx, root["normalizer"], "normalizer");
  }
  if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
    pre_tokenizer = parse_pre_tokenizer(ctx, root["pre_tokenizer"], "pre_tokenizer", byte_level,
                                        true);
  }
  if (root.contains("post_processor") && !root["post_processor"].is_null()) {
    post_processor = parse_post_processor(ctx, root["post_processor"], "post_processor");
  }
  if (root.contains("decoder") && !root["decoder"].is_null()) {
    decoder = parse_decoder(ctx, root["decoder"], "decoder");
  }
  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    parse_added_tokens(root["added_tokens"], ctx);
  }

  const ByteMap& bm = byte_map();
  byte_ids.fill(-1);
  raw_vocab.reserve(vocab.size());
  std::string raw;
  for (const auto& [token, id] : vocab) {
    if (!byte_level) {
      raw_vocab.emplace(token, id);
    } else if (bm.to_bytes(token, raw)) {
      raw_vocab.emplace(raw, id);
    }
  }
  if (byte_level) {
    for (int b = 0; b < 256; ++b) {
      auto it = vocab.find(bm.byte_to_utf8[b]);
      if (it != vocab.end()) byte_ids[b] = it->second;
    }
  }
  // A template that names an id outside the vocabulary would only fail later, in decode.
  if (post_processor) {
    if (auto id = post_processor->first_special();
        id && (static_cast<size_t>(*id) >= has_token.size() || !has_token[*id])) {
      ctx.fail("post_processor", "special token id " + std::to_string(*id) + " is not a token");
    }
  }
}

void BpeTokenizer::Impl::pick_special_ids(const json* config) {
  auto lookup = [&](const std::string& s) -> std::optional<TokenId> {
    auto it = added_vocab.find(s);
    if (it != added_vocab.end()) return it->second;
    auto jt = vocab.find(s);
    if (jt != vocab.end()) return jt->second;
    return std::nullopt;
  };
  auto from_config = [&](const char* key) -> std::optional<TokenId> {
    if (!config || !config->is_object() || !config->contains(key)) return std::nullopt;
    const json& v = (*config)[key];
    if (v.is_string()) return lookup(v.get<std::string>());
    if (v.is_object() && v.contains("content") && v["content"].is_string()) {
      return lookup(v["content"].get<std::string>());
    }
    return std::nullopt;
  };
  auto first_of = [&](std::initializer_list<const char*> names) -> std::optional<TokenId> {
    for (const char* n : names) {
      if (auto id = lookup(n)) return id;
    }
    return std::nullopt;
  };
  bos = from_config("bos_token");
  if (!bos && post_processor) bos = post_processor->first_special();
  if (!bos) bos = first_of({"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"});
  eos = from_config("eos_token");
  if (!eos) eos = first_of({"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>"});
  pad = from_config("pad_token");
  if (!pad) pad = first_of({"<pad>", "<|pad|>", "[PAD]"});
}

// Each character of the word (each byte, for byte-level models) as a token id; characters not in
// the vocabulary become <0xXX> byte tokens (byte_fallback) or <unk>, as HF's BPE::merge_word does.
void BpeTokenizer::Impl::initial_symbols(std::string_view word, std::vector<TokenId>& symbols) const {
  symbols.clear();
  const bool marked = !continuing_subword_prefix.empty() || !end_of_word_suffix.empty();
  if (byte_level && !marked) {
    bool complete = true;
    for (unsigned char c : word) {
      if (byte_ids[c] < 0) {
        complete = false;
        break;
      }
      symbols.push_back(byte_ids[c]);
    }
    if (complete) return;
    symbols.clear();
  }
  std::optional<std::pair<TokenId, size_t>> pending_unk;
  const ByteMap& bm = byte_map();
  std::string ch;
  size_t i = 0;
  while (i < word.size()) {
    const size_t len = byte_level ? 1 : utf8::lead_length(static_cast<unsigned char>(word[i]));
    // For byte-level models a "character" is the byte's stand-in from the byte map.
    std::string_view s = byte_level ? std::string_view(bm.byte_to_utf8[static_cast<unsigned char>(word[i])])
                                    : word.substr(i, len);
    const bool first = i == 0;
    i += len;
    std::string key;
    if (marked) {
      // As HF's BPE::merge_word: the prefix on every symbol but the first, the suffix on the last.
      key.assign(first ? std::string_view() : std::string_view(continuing_subword_prefix));
      key.append(s);
      if (i == word.size()) key.append(end_of_word_suffix);
    } else {
      key.assign(s);
    }
    auto it = vocab.find(key);
    if (it != vocab.end()) {
      if (pending_unk) {
        symbols.push_back(pending_unk->first);
        pending_unk.reset();
      }
      symbols.push_back(it->second);
      continue;
    }
    if (byte_fallback) {
      bool all = true;
      for (unsigned char c : s) all = all && fallback_ids[c] >= 0;
      if (all) {
        for (unsigned char c : s) symbols.push_back(fallback_ids[c]);
        continue;
      }
    }
    if (unk_id) {
      if (pending_unk && fuse_unk) {
        pending_unk->second += s.size();
      } else {
        if (pending_unk) symbols.push_back(pending_unk->first);
        pending_unk = std::make_pair(*unk_id, s.size());
      }
    }
    // Without an unk token HF drops the character; so do we.
  }
  if (pending_unk) symbols.push_back(pending_unk->first);
}

// Repeatedly merges the adjacent pair with the lowest rank, leftmost first. O(n^2) in the word
// length but without allocation: the fastest choice for the short words most text is made of.
void BpeTokenizer::Impl::merge_simple(std::vector<TokenId>& symbols) const {
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best = 0;
    TokenId best_id = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const PairMap::Value* v = merges.find(symbols[i], symbols[i + 1]);
      if (v && v->rank < best_rank) {
        best_rank = v->rank;
        best = i;
        best_id = v->id;
      }
    }
    if (best_rank == INT32_MAX) return;
    symbols[best] = best_id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
}

// The priority-queue merge of HF's Word::merge_all: same order (rank, then position), O(n log n).
void BpeTokenizer::Impl::merge_heap(std::vector<TokenId>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  struct Sym {
    TokenId id;
    int64_t prev, next;
    bool alive;
  };
  std::vector<Sym> sym(n);
  for (size_t i = 0; i < n; ++i) {
    sym[i] = {symbols[i], static_cast<int64_t>(i) - 1,
              i + 1 < n ? static_cast<int64_t>(i + 1) : -1, true};
  }
  struct Entry {
    int32_t rank;
    size_t pos;
    TokenId new_id;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> queue;
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const auto* v = merges.find(sym[i].id, sym[i + 1].id)) queue.push({v->rank, i, v->id});
  }
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Sym& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    Sym& right = sym[static_cast<size_t>(left.next)];
    const auto* v = merges.find(left.id, right.id);
    if (!v || v->id != top.new_id) continue;  // stale entry
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) sym[static_cast<size_t>(right.next)].prev = static_cast<int64_t>(top.pos);
    if (left.prev >= 0) {
      if (const auto* pv = merges.find(sym[static_cast<size_t>(left.prev)].id, left.id)) {
        queue.push({pv->rank, static_cast<size_t>(left.prev), pv->id});
      }
    }
    if (left.next >= 0) {
      if (const auto* nv = merges.find(left.id, sym[static_cast<size_t>(left.next)].id)) {
        queue.push({nv->rank, top.pos, nv->id});
      }
    }
  }
  symbols.clear();
  for (const Sym& s : sym) {
    if (s.alive) symbols.push_back(s.id);
  }
}

void BpeTokenizer::Impl::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    // Llama-3 style: a word that is itself a token is emitted whole, merges or not.
    auto it = raw_vocab.find(std::string(word));
    if (it != raw_vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(word);
    std::shared_lock<std::shared_mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  thread_local std::vector<TokenId> symbols;
  initial_symbols(word, symbols);
  if (symbols.size() <= 24) {
    merge_simple(symbols);
  } else {
    merge_heap(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::unique_lock<std::shared_mutex> lock(cache_mutex);
    if (cache.size() < kCacheEntries) cache.emplace(std::move(key), symbols);
  }
}

void BpeTokenizer::Impl::encode_piece(std::string_view piece, bool at_start,
                                      std::vector<TokenId>& out) const {
  if (piece.empty()) return;
  if (!pre_tokenizer) {
    encode_word(piece, out);
    return;
  }
  pre_tokenizer->split(piece, at_start, [&](std::string_view word, bool) { encode_word(word, out); });
}

// Splits `s` around added tokens as HF's AddedVocabulary::find_matches does, honouring
// single_word, lstrip and rstrip; calls fn(piece, offset, token id or -1) for each part.
template <typename Fn>
void BpeTokenizer::Impl::split_added(const AddedMatcher& matcher, std::string_view s, Fn&& fn) const {
  if (matcher.empty()) {
    if (!s.empty()) fn(s, size_t{0}, TokenId{-1});
    return;
  }
  size_t start_offset = 0, pos = 0;
  while (pos < s.size()) {
    size_t index = 0;
    const size_t len = matcher.match_at(s, pos, index);
    if (len == 0) {
      ++pos;
      continue;
    }
    const AddedToken& t = added[index];
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, even a rejected one
    if (t.single_word) {
      const bool start_ok = start == 0 || !is_word_char(s.substr(last_char_start(s.substr(0, start))));
      const bool stop_ok = stop == s.size() ||
                           !is_word_char(s.substr(stop, utf8::lead_length(static_cast<unsigned char>(s[stop]))));
      if (!start_ok || !stop_ok) continue;
    }
    if (t.lstrip) {
      size_t b = start;
      while (b > start_offset) {
        const size_t c = last_char_start(s.substr(0, b));
        size_t k = c;
        if (!is_whitespace(utf8::next(s, k))) break;
        b = c;
      }
      start = b;
    }
    if (t.rstrip) {
      while (stop < s.size()) {
        size_t k = stop;
        if (!is_whitespace(utf8::next(s, k))) break;
        stop = k;
      }
      pos = stop;
    }
    if (start_offset < start) fn(s.substr(start_offset, start - start_offset), start_offset, TokenId{-1});
    fn(s.substr(start, stop - start), start, t.id);
    start_offset = stop;
  }
  if (start_offset < s.size()) fn(s.substr(start_offset), start_offset, TokenId{-1});
}

// ---- public API ------------------------------------------------------------------------------

BpeTokenizer::BpeTokenizer() : impl_(std::make_unique<Impl>()) {}
BpeTokenizer::~BpeTokenizer() = default;

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(std::string_view text, const std::string& name) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail_format(name, "not valid JSON: ", e.what());
  }
  std::unique_ptr<BpeTokenizer> tok(new BpeTokenizer());
  tok->impl_->name = name;
  Ctx ctx{name};
  try {
    tok->impl_->parse(root, ctx);
  } catch (const json::exception& e) {
    // A safety net: every access above checks types first, so this means a case we missed.
    fail_format(name, "unexpected JSON structure: ", e.what());
  }
  tok->impl_->pick_special_ids(nullptr);
  return tok;
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_json(std::string_view text, const std::string& name,
                                                     std::string_view config_text) {
  auto tok = from_json(text, name);
  if (!config_text.empty()) {
    json config = json::parse(config_text.begin(), config_text.end(), nullptr,
                              /*allow_exceptions=*/false);
    if (config.is_discarded()) fail_format(name, ": tokenizer_config.json is not valid JSON");
    tok->impl_->pick_special_ids(&config);
  }
  return tok;
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_file(const std::filesystem::path& path) {
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) fail_io(p.string(), "cannot open");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
  };
  const auto config_path = path.parent_path() / "tokenizer_config.json";
  auto tok = from_json(read(path), path.string());
  if (std::filesystem::is_regular_file(config_path)) {
    const std::string config_text = read(config_path);
    json config = json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded()) fail_format(config_path.string(), "not valid JSON");
    tok->impl_->pick_special_ids(&config);
  }
  return tok;
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::replace_invalid(text);
    text = repaired;
  }
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  m.split_added(m.raw_matcher, text, [&](std::string_view piece, size_t offset, TokenId added) {
    if (added >= 0) {
      ids.push_back(added);
      return;
    }
    std::string normalized;
    std::string_view view = piece;
    if (m.normalizer) {
      normalized.assign(piece);
      m.normalizer->apply(normalized);
      view = normalized;
    }
    m.split_added(m.normalized_matcher, view, [&](std::string_view part, size_t off, TokenId id) {
      if (id >= 0) {
        ids.push_back(id);
      } else {
        m.encode_piece(part, offset == 0 && off == 0, ids);
      }
    });
  });
  return add_special_tokens ? this->add_special_tokens(std::move(ids)) : ids;
}

std::vector<TokenId> BpeTokenizer::add_special_tokens(std::vector<TokenId> ids) const {
  if (impl_->post_processor) impl_->post_processor->apply(ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<TokenId>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (TokenId id : ids) {
    CONCORD_CHECK(id >= 0 && static_cast<size_t>(id) < m.has_token.size() && m.has_token[id],
                  m.name, ": token id ", id, " is not in the vocabulary");
    if (skip_special_tokens && m.special_ids.count(id)) continue;
    tokens.push_back(m.id_to_token[id]);
  }
  if (!m.decoder) {
    // HF joins tokens with spaces when a file has no decoder.
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  m.decoder->apply(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  if (!m.end_of_word_suffix.empty()) {
    // transformers' CLIPTokenizer wraps its ByteLevel decoder so: each "</w>" a space, trimmed.
    std::string spaced;
    for (size_t i = 0; i < out.size();) {
      if (out.compare(i, m.end_of_word_suffix.size(), m.end_of_word_suffix) == 0) {
        spaced += ' ';
        i += m.end_of_word_suffix.size();
      } else {
        spaced += out[i++];
      }
    }
    const size_t b = spaced.find_first_not_of(' '), e = spaced.find_last_not_of(' ');
    out = b == std::string::npos ? std::string() : spaced.substr(b, e - b + 1);
  }
  return out;
}

int64_t BpeTokenizer::vocab_size() const { return static_cast<int64_t>(impl_->has_token.size()); }

std::optional<TokenId> BpeTokenizer::token_to_id(std::string_view token) const {
  const std::string key(token);
  auto it = impl_->added_vocab.find(key);
  if (it != impl_->added_vocab.end()) return it->second;
  auto jt = impl_->vocab.find(key);
  if (jt != impl_->vocab.end()) return jt->second;
  return std::nullopt;
}

std::string BpeTokenizer::id_to_token(TokenId id) const {
  CONCORD_CHECK(id >= 0 && static_cast<size_t>(id) < impl_->has_token.size() && impl_->has_token[id],
                impl_->name, ": token id ", id, " is not in the vocabulary");
  return impl_->id_to_token[id];
}

std::optional<TokenId> BpeTokenizer::bos_id() const { return impl_->bos; }
std::optional<TokenId> BpeTokenizer::eos_id() const { return impl_->eos; }
std::optional<TokenId> BpeTokenizer::pad_id() const { return impl_->pad; }
bool BpeTokenizer::is_special(TokenId id) const { return impl_->special_ids.count(id) > 0; }

std::vector<TokenId> BpeTokenizer::bpe_word(std::string_view word, bool force_heap) const {
  std::string repaired;
  if (!utf8::is_valid(word)) {
    repaired = utf8::replace_invalid(word);
    word = repaired;
  }
  std::vector<TokenId> symbols;
  impl_->initial_symbols(word, symbols);
  if (force_heap) {
    impl_->merge_heap(symbols);
  } else {
    impl_->merge_simple(symbols);
  }
  return symbols;
}

}  // namespace concord::text
