// JSON Lines (https://jsonlines.org): one JSON value per line, UTF-8. Every Concord data set is a
// JSONL file of objects (docs/architecture.md, "Formats"). The reader streams line by line (a
// file is never loaded whole), bounds the memory one line may take, and reports every bad line as
// "FILE:LINE: what is wrong". What happens to a bad line is a policy: `stop` throws, `skip`
// counts it, keeps the first few messages for the run report, and goes on.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace concord::data {

/// What a reader does with a line that is not a valid record.
enum class BadRecordPolicy {
  stop,  ///< throw concord::FormatError "FILE:LINE: ..." (the default)
  skip,  ///< count it, keep its message as an example (up to max_examples), read on
};

/// "stop" or "skip"; anything else throws concord::Error listing the valid names.
BadRecordPolicy bad_record_policy_from_string(const std::string& name);
const char* to_string(BadRecordPolicy policy);

struct JsonlOptions {
  /// What to do with a bad line (invalid JSON, not an object, a record that fails validation).
  BadRecordPolicy on_bad = BadRecordPolicy::stop;
  /// Under `skip`, how many bad-record messages to keep for the report.
  size_t max_examples = 10;
  /// Longest line accepted, in bytes. A longer line is a bad record; the reader discards the
  /// rest of it without buffering, so a file with no newline cannot exhaust memory.
  size_t max_line_bytes = size_t{64} << 20;
  /// Deepest nesting of arrays/objects accepted (records are shallow; this bounds the work a
  /// hostile line can cause).
  int max_depth = 64;
};

/// Bad lines seen by a reader under the `skip` policy.
struct BadRecords {
  int64_t count = 0;
  std::vector<std::string> examples;  ///< "FILE:LINE: what", the first max_examples of them

  /// "3 bad records skipped in FILE (first: ...)" or "" when there were none.
  std::string summary(const std::string& file) const;
  nlohmann::json to_json() const;
};

/// Where a record came from, for error messages.
struct RecordLocation {
  std::string file;
  int64_t line = 0;

  /// Throws concord::FormatError "FILE:LINE: " followed by the streamed arguments.
  [[noreturn]] void fail(const std::string& what) const;
};

/// Streams the objects of a JSONL file. Blank lines (only whitespace) are skipped; a UTF-8
/// byte-order mark on the first line is ignored; "\r\n" line ends are accepted.
class JsonlReader {
 public:
  /// Opens `path`; an unreadable file throws concord::Error naming it.
  explicit JsonlReader(const std::filesystem::path& path, JsonlOptions options = {});
  /// Reads from `in` (not owned; must outlive the reader). `name` stands for the file in
  /// messages. This is the entry point for in-memory buffers and the fuzzer.
  JsonlReader(std::istream& in, std::string name, JsonlOptions options = {});
  ~JsonlReader();
  JsonlReader(const JsonlReader&) = delete;
  JsonlReader& operator=(const JsonlReader&) = delete;

  /// The next line that parses to a JSON object; false at the end of the input. A bad line
  /// throws (stop) or is counted and passed over (skip).
  bool next(nlohmann::json& object);

  /// next() followed by `convert(object, location)`. A concord::FormatError thrown by `convert`
  /// (a record that fails validation) is handled by the policy like a syntax error.
  template <typename Record, typename Convert>
  bool next(Record& out, Convert&& convert) {
    nlohmann::json object;
    while (next(object)) {
      if (try_convert([&] { out = convert(object, location()); })) return true;
    }
    return false;
  }

  /// Calls `fn(object, location)` for every good object; FormatErrors from `fn` go through the
  /// policy. Returns the number of records `fn` accepted.
  int64_t for_each(const std::function<void(const nlohmann::json&, const RecordLocation&)>& fn);

  /// The file name and the 1-based line number of the record last returned.
  RecordLocation location() const { return {name_, line_}; }
  const std::string& name() const { return name_; }
  const BadRecords& bad_records() const { return bad_; }
  const JsonlOptions& options() const { return options_; }

  /// Applies the policy to a failure found by the caller at the current line (stop: rethrow
  /// as FormatError; skip: count it).
  void report_bad(const std::string& message);

 private:
  bool read_line(std::string& line, bool& too_long);
  bool try_convert(const std::function<void()>& convert);

  std::unique_ptr<std::ifstream> owned_;
  std::istream* in_ = nullptr;
  std::string name_;
  JsonlOptions options_;
  int64_t line_ = 0;
  BadRecords bad_;
  std::vector<char> chunk_;
};

/// Parses one line (no newline) as a JSON object. Errors are FormatError "LOC: ..." with the
/// byte offset (1-based, counted in the line) where the parser stopped, or the offset of the
/// first byte that is not UTF-8. Exposed for tests and the fuzzer.
nlohmann::json parse_jsonl_line(const std::string& line, const RecordLocation& loc,
                                int max_depth = 64);

/// Appends JSON objects to a file one whole line at a time: each write() is serialised first
/// and then written with one call and flushed, so a reader (or a crash) never sees half a line.
/// Used for metrics.jsonl and other logs that grow during a run.
class JsonlAppender {
 public:
  /// Opens `path` for appending (creating it and its folder). `truncate` starts it empty.
  explicit JsonlAppender(const std::filesystem::path& path, bool truncate = false);
  ~JsonlAppender();
  JsonlAppender(const JsonlAppender&) = delete;
  JsonlAppender& operator=(const JsonlAppender&) = delete;

  void write(const nlohmann::json& value);
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

/// Writes `values` as JSONL through concord::write_file_atomic (all or nothing).
void write_jsonl(const std::filesystem::path& path, const std::vector<nlohmann::json>& values);

/// One JSON value as a JSONL line (compact, UTF-8 kept as it is, '\n' appended). Invalid UTF-8
/// in a string throws concord::Error instead of writing a line no reader accepts.
std::string to_jsonl_line(const nlohmann::json& value);

}  // namespace concord::data
