// JSONL reading and record validation: every kind of bad line gives "FILE:LINE: what", the
// skip policy counts and reports, and Python-written Unicode parses byte for byte.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/data/grape_pool.h"
#include "concord/data/jsonl.h"
#include "concord/data/records.h"
#include "test_support.h"

using namespace concord;
using namespace concord::data;
using concord::testing::TempDir;
using concord::testing::fixture;
using concord::testing::write_file;
using nlohmann::json;

namespace {

// The message of the FormatError that reading `text` as SFT records throws under `stop`.
std::string sft_error(const std::string& text) {
  std::istringstream in(text);
  try {
    read_sft_records(in, "d.jsonl");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string text_error(const std::string& text) {
  std::istringstream in(text);
  try {
    validate_records(in, "t.jsonl", RecordKind::text);
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Jsonl, EachKindOfBadLineNamesFileAndLine) {
  const std::string ok = "{\"text\": \"fine\"}\n";
  // Syntax error: the parser stops at byte 13, the end of the unterminated 13-byte object.
  EXPECT_EQ(text_error(ok + "\n{\"text\": \"x\"\n"),
            "t.jsonl:3: invalid JSON at byte 13: syntax error while parsing object - unexpected "
            "end of input; expected '}'");
  EXPECT_EQ(text_error(ok + "[1, 2]\n"), "t.jsonl:2: expected a JSON object, got array");
  EXPECT_EQ(text_error(ok + "\"str\"\n"), "t.jsonl:2: expected a JSON object, got string");
  EXPECT_EQ(text_error(ok + ok + "{\"txt\": \"x\"}\n"), "t.jsonl:3: missing key 'text'");
  EXPECT_EQ(text_error("{\"text\": 5}"), "t.jsonl:1: key 'text' must be a string, got number");
  // 0xff never occurs in UTF-8; it sits at byte 12 of the line (1-based).
  EXPECT_EQ(text_error("{\"text\": \"a\xff\"}\n"), "t.jsonl:1: invalid UTF-8 at byte 12 (0xff)");
  // An overlong encoding of '/' and a UTF-16 surrogate encoded as UTF-8 are invalid too.
  EXPECT_EQ(text_error("{\"text\": \"\xc0\xaf\"}"), "t.jsonl:1: invalid UTF-8 at byte 11 (0xc0)");
  EXPECT_EQ(text_error("{\"text\": \"\xed\xa0\x80\"}"),
            "t.jsonl:1: invalid UTF-8 at byte 11 (0xed)");
  // A lone surrogate escape is rejected by the parser.
  EXPECT_NE(text_error("{\"text\": \"\\ud800\"}").find("t.jsonl:1: invalid JSON at byte "),
            std::string::npos);
  // Regression (found by fuzz/fuzz_jsonl.cpp): an overflowing number is out_of_range, not a
  // parse_error, in nlohmann::json; it used to escape as a non-FormatError exception.
  EXPECT_EQ(text_error("{\"text\": \"a\", \"n\": 1e999}"),
            "t.jsonl:1: invalid JSON: number overflow parsing '1e999'");
  EXPECT_EQ(text_error(std::string(100, '[') + std::string(100, ']')),
            "t.jsonl:1: JSON nested deeper than 64 levels");
}

TEST(Jsonl, SftValidationMessages) {
  EXPECT_EQ(sft_error("{\"prompt\": \"p\"}"), "d.jsonl:1: missing key 'completion'");
  EXPECT_EQ(sft_error("{\"foo\": 1}"), "d.jsonl:1: missing key 'prompt' (or 'messages')");
  EXPECT_EQ(sft_error("{\"prompt\": \"p\", \"completion\": [\"c\"]}"),
            "d.jsonl:1: key 'completion' must be a string, got array");
  EXPECT_EQ(sft_error("{\"messages\": []}"), "d.jsonl:1: key 'messages' is an empty array");
  EXPECT_EQ(sft_error("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}"),
            "d.jsonl:1: 'messages[0].role' is 'bot' (valid: system, user, assistant)");
  EXPECT_EQ(sft_error("{\"messages\": [{\"role\": \"user\"}]}"),
            "d.jsonl:1: missing key 'messages[0].content'");
  EXPECT_EQ(sft_error("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"),
            "d.jsonl:1: 'messages' has no assistant turn (nothing to train on)");
  EXPECT_EQ(sft_error("{\"messages\": [1]}"), "d.jsonl:1: 'messages[0]' must be an object, got number");
  EXPECT_EQ(sft_error("{\"prompt\": \"p\", \"completion\": \"c\", \"messages\": []}"),
            "d.jsonl:1: has both 'messages' and 'prompt'/'completion'; an SFT record holds one "
            "of them");
}

TEST(Jsonl, SkipPolicyCountsAndKeepsExamples) {
  std::string text =
      "{\"prompt\": \"a\", \"completion\": \"b\"}\n"
      "not json\n"
      "{\"prompt\": \"c\", \"completion\": \"d\"}\r\n"
      "   \n"
      "{\"prompt\": 1, \"completion\": \"d\"}\n"
      "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
      "{\"role\": \"assistant\", \"content\": \"r\"}]}\n"
      "[]";
  std::istringstream in(text);
  JsonlOptions opt;
  opt.on_bad = BadRecordPolicy::skip;
  opt.max_examples = 2;
  BadRecords bad;
  auto records = read_sft_records(in, "mix.jsonl", opt, &bad);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].prompt, "a");
  EXPECT_EQ(records[1].completion, "d");
  ASSERT_TRUE(records[2].is_chat());
  EXPECT_EQ(records[2].messages[1].content, "r");
  EXPECT_EQ(bad.count, 3);
  ASSERT_EQ(bad.examples.size(), 2u);  // capped at max_examples
  EXPECT_EQ(bad.examples[0],
            "mix.jsonl:2: invalid JSON at byte 2: syntax error while parsing value - invalid "
            "literal; last read: 'no'");
  EXPECT_EQ(bad.examples[1], "mix.jsonl:5: key 'prompt' must be a string, got number");
  EXPECT_EQ(bad.summary("mix.jsonl").rfind("3 bad records skipped in mix.jsonl (first: ", 0), 0u);
  // The same input under `stop` throws at the first bad line.
  std::istringstream again(text);
  EXPECT_THROW(read_sft_records(again, "mix.jsonl"), FormatError);
}

TEST(Jsonl, OverlongLineIsBoundedAndReported) {
  TempDir dir;
  // A 300 kB line with no newline at the end: longer than the 100 kB limit.
  std::string big = "{\"text\": \"" + std::string(300000, 'x') + "\"}";
  auto path = write_file(dir / "big.jsonl", "{\"text\": \"a\"}\n" + big + "\n{\"text\": \"b\"}");
  JsonlOptions opt;
  opt.max_line_bytes = 100000;
  opt.on_bad = BadRecordPolicy::skip;
  BadRecords bad;
  auto records = read_text_records(path, opt, &bad);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].text, "b");  // the line after the long one is read from its start
  ASSERT_EQ(bad.count, 1);
  EXPECT_EQ(bad.examples[0], path.string() + ":2: line longer than 100000 bytes");
  // Within the limit the same line parses, across the reader's 64 kB chunks.
  opt.max_line_bytes = 400000;
  EXPECT_EQ(read_text_records(path, opt)[1].text.size(), 300000u);
}

TEST(Jsonl, PythonWrittenUnicodeParsesByteForByte) {
  json expected = json::parse(read_file(fixture("data/expected.json")));
  auto records = read_text_records(fixture("data/unicode.jsonl"));  // CRLF line ends
  ASSERT_EQ(records.size(), expected["texts"].size());
  for (size_t i = 0; i < records.size(); ++i) {
    auto bytes = expected["utf8_bytes"][i].get<std::vector<int>>();
    std::string want(bytes.begin(), bytes.end());
    EXPECT_EQ(records[i].text, want) << "record " << i;
  }
}

TEST(Jsonl, ByteOrderMarkAndMissingFinalNewline) {
  std::istringstream in("\xEF\xBB\xBF{\"text\": \"a\"}\n{\"text\": \"b\"}");
  EXPECT_EQ(validate_records(in, "bom.jsonl", RecordKind::text), 2);
}

TEST(Jsonl, WriterRoundTripAndAppender) {
  TempDir dir;
  std::vector<json> values = {{{"text", "α\nβ"}}, {{"text", "x"}, {"n", 3}}};
  write_jsonl(dir / "w.jsonl", values);
  EXPECT_EQ(read_file(dir / "w.jsonl"), "{\"text\":\"α\\nβ\"}\n{\"n\":3,\"text\":\"x\"}\n");
  {
    JsonlAppender app(dir / "sub" / "metrics.jsonl");
    app.write({{"step", 1}});
    app.write({{"step", 2}});
  }
  {
    JsonlAppender app(dir / "sub" / "metrics.jsonl");  // reopening appends
    app.write({{"step", 3}});
  }
  EXPECT_EQ(read_file(dir / "sub" / "metrics.jsonl"),
            "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n");
  // Invalid UTF-8 is refused at write time instead of producing an unreadable line.
  EXPECT_THROW(to_jsonl_line(json{{"text", std::string("\xff")}}), Error);
}

TEST(Jsonl, PolicyNames) {
  EXPECT_EQ(bad_record_policy_from_string("skip"), BadRecordPolicy::skip);
  try {
    bad_record_policy_from_string("ignore");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "unknown bad-record policy 'ignore' (valid: stop, skip)");
  }
}

TEST(Records, PreferenceUsersGetDenseStableIds) {
  TempDir dir;
  auto path = write_file(dir / "pref.jsonl",
                         "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u7\"}\n"
                         "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u3\"}\n"
                         "{\"prompt\":\"p\",\"chosen\":\"a\",\"user\":\"bad\"}\n"
                         "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\",\"user\":\"u7\"}\n"
                         "{\"prompt\":\"p\",\"chosen\":\"a\",\"rejected\":\"b\"}\n");
  JsonlOptions opt;
  opt.on_bad = BadRecordPolicy::skip;
  UserIndex users;
  BadRecords bad;
  auto recs = read_preference_records(path, opt, &bad, &users);
  ASSERT_EQ(recs.size(), 4u);
  EXPECT_EQ(recs[0].user_index, 0);
  EXPECT_EQ(recs[1].user_index, 1);
  EXPECT_EQ(recs[2].user_index, 0);
  EXPECT_EQ(recs[3].user_index, 2);  // absent user -> "" gets its own id
  EXPECT_EQ(users.names(), (std::vector<std::string>{"u7", "u3", ""}));
  EXPECT_EQ(users.find("bad"), -1);  // a skipped record never takes an id
  EXPECT_EQ(bad.examples.at(0), path.string() + ":3: missing key 'rejected'");
  UserIndex back = UserIndex::from_json(users.to_json());
  EXPECT_EQ(back.find("u3"), 1);
  EXPECT_THROW(UserIndex::from_json(json{"a", "a"}), Error);
}

TEST(Records, GrapePoolsValidateAndDedup) {
  std::istringstream in(
      "{\"id\": 1, \"instruction\": \"i\", \"responses\": [{\"text\": \"A\", \"source\": \"m1\"},"
      " {\"text\": \"B\", \"source\": \"m2\"}, {\"text\": \"A\", \"source\": \"m3\"},"
      " {\"text\": \" B \", \"source\": \"m4\"}]}\n"
      "{\"id\": \"2\", \"instruction\": \"j\", \"responses\": []}\n"
      "{\"id\": \"1\", \"instruction\": \"k\", \"responses\": [{\"text\": \"C\"}]}\n"
      "{\"id\": \"3\", \"instruction\": \"k\", \"responses\": [{\"source\": \"m\"}]}\n"
      "{\"id\": 4.5, \"instruction\": \"k\", \"responses\": [{\"text\": \"C\"}]}\n");
  JsonlOptions opt;
  opt.on_bad = BadRecordPolicy::skip;
  BadRecords bad;
  auto pools = read_grape_pools(in, "pools.jsonl", opt, &bad);
  ASSERT_EQ(pools.size(), 1u);
  EXPECT_EQ(bad.count, 4);
  EXPECT_EQ(bad.examples, (std::vector<std::string>{
                              "pools.jsonl:2: pool '2' has no responses",
                              "pools.jsonl:3: pool id '1' already used on line 1",
                              "pools.jsonl:4: missing key 'responses[0].text'",
                              "pools.jsonl:5: key 'id' must be a string or an integer, got number",
                          }));
  GrapePool exact = pools[0];
  EXPECT_EQ(dedup_responses(exact), 1);
  ASSERT_EQ(exact.responses.size(), 3u);
  EXPECT_EQ(exact.responses[0].text, "A");
  EXPECT_EQ(exact.responses[0].duplicate_sources, std::vector<std::string>{"m3"});
  EXPECT_EQ(exact.responses[2].text, " B ");
  GrapePool trimmed = pools[0];
  EXPECT_EQ(dedup_responses(trimmed, /*trim=*/true), 2);
  EXPECT_EQ(trimmed.responses[1].duplicate_sources, std::vector<std::string>{"m4"});
  std::vector<GrapePool> all = pools;
  DedupStats s = dedup_responses(all);
  EXPECT_EQ(s.responses_before, 4);
  EXPECT_EQ(s.responses_after, 3);
}
