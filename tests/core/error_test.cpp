// concord::Error's kinds and the translation of LibTorch's c10::Error at the API boundary.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <string>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "test_support.h"

using concord::Error;
using concord::ErrorKind;

TEST(Error, EachKindIsAnErrorAndSaysWhichItIs) {
  try {
    concord::fail_config("run.json", "key 'x': bad");
  } catch (const concord::FormatError& e) {  // a bad config is a malformed file too
    EXPECT_EQ(e.kind(), ErrorKind::config);
    EXPECT_STREQ(e.what(), "run.json: key 'x': bad");
  }
  try {
    concord::fail_io("/nope", "cannot open");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(dynamic_cast<const concord::IoError*>(&e), nullptr);
    EXPECT_STREQ(e.what(), "/nope: cannot open");
  }
  try {
    concord::fail_unsupported("task 'ppo' is not available");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::unsupported);
    EXPECT_NE(dynamic_cast<const concord::UnsupportedError*>(&e), nullptr);
  }
  try {
    concord::fail_format("x.jsonl", "line 2: not JSON");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
    EXPECT_EQ(dynamic_cast<const concord::ConfigError*>(&e), nullptr);
  }
  try {
    CONCORD_CHECK(1 + 1 == 3, "arithmetic");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::generic);
  }
  EXPECT_STREQ(concord::error_kind_name(ErrorKind::io), "io");
  EXPECT_STREQ(concord::error_kind_name(ErrorKind::torch), "torch");
}

TEST(Error, MissingFilesAreIoErrorsAndBadKeysConfigErrors) {
  concord::testing::TempDir tmp;
  EXPECT_THROW(concord::read_file(tmp / "missing.txt"), concord::IoError);
  EXPECT_THROW(concord::load_json_file(tmp / "missing.json"), concord::IoError);
  concord::ConfigSchema s;
  s.optional("steps", concord::ConfigType::Int, 1, "steps");
  EXPECT_THROW(s.resolve({{"stesp", 2}}, "run.json"), concord::ConfigError);
  // A JSON syntax error is a FormatError, not a ConfigError.
  try {
    concord::parse_json("{\"a\": ", "run.json");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::format);
  }
}

TEST(Error, LibTorchErrorsAreTranslatedWithTheOperationNamed) {
  const at::Tensor a = at::ones({2, 3});
  const at::Tensor b = at::ones({2, 3});
  // Without the helper LibTorch's own exception escapes.
  EXPECT_THROW(at::mm(a, b), c10::Error);
  try {
    concord::translate_torch_errors("demo::product", [&] { return at::mm(a, b); });
    FAIL() << "expected an error";
  } catch (const concord::TorchError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::torch);
    const std::string m = e.what();
    EXPECT_EQ(m.rfind("demo::product: ", 0), 0u) << m;
    EXPECT_NE(m.find("2x3"), std::string::npos) << m;  // LibTorch's own reason is kept
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;   // one line, no backtrace
  }
  // Values pass through, void callables work, and Concord's own errors are not rewrapped.
  EXPECT_EQ(concord::translate_torch_errors("x", [] { return 42; }), 42);
  int calls = 0;
  concord::translate_torch_errors("x", [&] { ++calls; });
  EXPECT_EQ(calls, 1);
  try {
    concord::translate_torch_errors("x", [] { concord::fail_io("f", "gone"); });
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_STREQ(e.what(), "f: gone");
  }
  // Exceptions that are not LibTorch's pass through unchanged.
  EXPECT_THROW(concord::translate_torch_errors("x", [] { throw std::out_of_range("o"); }),
               std::out_of_range);
}
