#include "concord/data/jsonl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <istream>
#include <sstream>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::data {

BadRecordPolicy bad_record_policy_from_string(const std::string& name) {
  if (name == "stop") return BadRecordPolicy::stop;
  if (name == "skip") return BadRecordPolicy::skip;
  fail("unknown bad-record policy '", name, "' (valid: stop, skip)");
}

const char* to_string(BadRecordPolicy policy) {
  return policy == BadRecordPolicy::stop ? "stop" : "skip";
}

std::string BadRecords::summary(const std::string& file) const {
  if (count == 0) return "";
  std::string out = std::to_string(count) + " bad record" + (count == 1 ? "" : "s") +
                    " skipped in " + file;
  if (!examples.empty()) out += " (first: " + examples.front() + ")";
  return out;
}

json BadRecords::to_json() const { return json{{"count", count}, {"examples", examples}}; }

void RecordLocation::fail(const std::string& what) const {
  throw FormatError(file + ":" + std::to_string(line) + ": " + what);
}

namespace {

// Printable ASCII as it is, anything else as \xNN: parser messages quote the input, and a
// one-line error must stay one line of valid text whatever the input held.
std::string printable(std::string_view text, size_t limit = 80) {
  std::string out;
  for (size_t i = 0; i < text.size() && out.size() < limit; ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  if (out.size() >= limit) out += "...";
  return out;
}

// Offset of the first byte that does not belong to well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF), or npos.
size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if (i + k >= n || p[i + k] < 0x80 || p[i + k] > 0xbf) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

// Deepest nesting of arrays/objects outside strings; stops counting once over `limit`.
int nesting_depth(std::string_view s, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

bool is_blank(std::string_view s) {
  return s.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

const char* type_name(const json& j) { return j.type_name(); }

}  // namespace

json parse_jsonl_line(const std::string& line, const RecordLocation& loc, int max_depth) {
  size_t bad = first_invalid_utf8(line);
  if (bad != std::string_view::npos) {
    loc.fail("invalid UTF-8 at byte " + std::to_string(bad + 1) + " (0x" +
             printable(line.substr(bad, 1)).substr(2) + ")");
  }
  if (nesting_depth(line, max_depth) > max_depth) {
    loc.fail("JSON nested deeper than " + std::to_string(max_depth) + " levels");
  }
  json value;
  try {
    value = json::parse(line);
  } catch (const json::parse_error& e) {
    // nlohmann's message starts "[json.exception.parse_error.101] parse error at line 1,
    // column N: "; the column is the byte we report ourselves, so keep only the reason.
    std::string what = e.what();
    size_t colon = what.find(": ", what.find("column"));
    std::string reason = colon == std::string::npos ? what : what.substr(colon + 2);
    loc.fail("invalid JSON at byte " + std::to_string(e.byte) + ": " + printable(reason, 160));
  } catch (const json::exception& e) {
    // Not a syntax error but a value the parser cannot hold (a number such as 1e999 overflows
    // a double: out_of_range.406). Found by fuzz/fuzz_jsonl.cpp.
    std::string what = e.what();
    size_t bracket = what.find("] ");
    loc.fail("invalid JSON: " +
             printable(bracket == std::string::npos ? what : what.substr(bracket + 2), 160));
  }
  if (!value.is_object()) loc.fail(std::string("expected a JSON object, got ") + type_name(value));
  return value;
}

// ---- JsonlReader ----------------------------------------------------------------------------

JsonlReader::JsonlReader(const fs::path& path, JsonlOptions options)
    : owned_(std::make_unique<std::ifstream>(path, std::ios::binary)),
      in_(owned_.get()),
      name_(path.string()),
      options_(options) {
  if (!*owned_) fail_io(name_, "cannot open for reading");
}

JsonlReader::JsonlReader(std::istream& in, std::string name, JsonlOptions options)
    : in_(&in), name_(std::move(name)), options_(options) {}

JsonlReader::~JsonlReader() = default;

// One line into `line` without its "\n" (and "\r"). A line longer than max_line_bytes is read
// to its end but not kept (`too_long`), so memory stays bounded by the limit plus one chunk.
bool JsonlReader::read_line(std::string& line, bool& too_long) {
  line.clear();
  too_long = false;
  if (chunk_.empty()) chunk_.resize(size_t{1} << 16);
  bool any = false;
  for (;;) {
    in_->getline(chunk_.data(), static_cast<std::streamsize>(chunk_.size()));
    auto got = static_cast<size_t>(in_->gcount());
    if (in_->bad()) fail_io(name_, "read failed after line ", line_);
    bool delimited = !in_->fail() && !in_->eof();
    bool filled = in_->fail() && !in_->eof();  // chunk full before the newline
    size_t stored = delimited ? got - 1 : got;  // gcount counts the extracted '\n'
    any = any || got > 0;
    if (!too_long) {
      if (line.size() + stored > options_.max_line_bytes) {
        too_long = true;
        line.clear();
        line.shrink_to_fit();
      } else {
        line.append(chunk_.data(), stored);
      }
    }
    if (filled) {
      in_->clear();
      continue;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return any || delimited;
  }
}

void JsonlReader::report_bad(const std::string& message) {
  if (options_.on_bad == BadRecordPolicy::stop) throw FormatError(message);
  ++bad_.count;
  if (bad_.examples.size() < options_.max_examples) bad_.examples.push_back(message);
}

bool JsonlReader::next(json& object) {
  std::string line;
  bool too_long = false;
  while (read_line(line, too_long)) {
    ++line_;
    if (too_long) {
      report_bad(name_ + ":" + std::to_string(line_) + ": line longer than " +
                 std::to_string(options_.max_line_bytes) + " bytes");
      continue;
    }
    if (line_ == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
    if (is_blank(line)) continue;
    try {
      object = parse_jsonl_line(line, location(), options_.max_depth);
      return true;
    } catch (const FormatError& e) {
      report_bad(e.what());
    }
  }
  return false;
}

bool JsonlReader::try_convert(const std::function<void()>& convert) {
  try {
    convert();
    return true;
  } catch (const FormatError& e) {
    report_bad(e.what());
    return false;
  } catch (const json::exception& e) {
    // A converter that reached for a value of the wrong type without checking first.
    report_bad(name_ + ":" + std::to_string(line_) + ": " + printable(e.what(), 160));
    return false;
  }
}

int64_t JsonlReader::for_each(
    const std::function<void(const json&, const RecordLocation&)>& fn) {
  int64_t accepted = 0;
  json object;
  while (next(object)) {
    if (try_convert([&] { fn(object, location()); })) ++accepted;
  }
  return accepted;
}

// ---- writing --------------------------------------------------------------------------------

std::string to_jsonl_line(const json& value) {
  std::string line;
  try {
    line = value.dump(-1, ' ', false, json::error_handler_t::strict);
  } catch (const json::type_error& e) {
    fail("cannot write JSONL: ", e.what());
  }
  line.push_back('\n');
  return line;
}

void write_jsonl(const fs::path& path, const std::vector<json>& values) {
  std::string text;
  for (const auto& v : values) text += to_jsonl_line(v);
  write_file_atomic(path, text);
}

JsonlAppender::JsonlAppender(const fs::path& path, bool truncate) : path_(path) {
  std::error_code ec;
  if (path.has_parent_path()) fs::create_directories(path.parent_path(), ec);
  int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0);
  fd_ = ::open(path.c_str(), flags, 0644);
  if (fd_ < 0) fail_io(path.string(), "cannot open for appending: ", std::strerror(errno));
}

JsonlAppender::~JsonlAppender() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlAppender::write(const json& value) {
  // One write(2) of the whole line on an O_APPEND descriptor: concurrent readers see whole
  // lines, and a crash loses at most the line being written.
  std::string line = to_jsonl_line(value);
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io(path_.string(), "write failed: ", std::strerror(errno));
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace concord::data
