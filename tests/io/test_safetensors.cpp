// Tests of the safetensors reader and writer against files written by the Python `safetensors`
// package (tests/fixtures/safetensors, made by scripts/fixtures/make_safetensors_fixtures.py):
// values read exactly, bytes written identically, every malformed header rejected by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/safetensors.h"
#include "concord/io/safetensors_sharded.h"
#include "test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace concord::io;
using concord::testing::fixture;
using concord::testing::TempDir;

namespace {

fs::path st_fixture(const std::string& name) { return fixture("safetensors/" + name); }

const json& safetensors_expected() {
  static const json j = json::parse(concord::read_file(st_fixture("expected.json")));
  return j;
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file with the given header text and data bytes.
std::string st_bytes(const std::string& header, const std::string& data = "") {
  return le64(header.size()) + header + data;
}

const uint8_t* u8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

double expected_double(const json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "nan") return std::nan("");
    return s == "inf" ? INFINITY : -INFINITY;
  }
  return v.get<double>();
}

bool same_double(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

// Checks dtype, shape and every value against the fixture's description of the tensor.
void expect_matches(const at::Tensor& t, const json& desc, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(safetensors_dtype_name(scalar_type_to_safetensors(t.scalar_type())),
            desc["dtype"].get<std::string>());
  EXPECT_EQ(t.sizes().vec(), desc["shape"].get<std::vector<int64_t>>());
  const json& values = desc["values"];
  ASSERT_EQ(static_cast<size_t>(t.numel()), values.size());
  at::Tensor flat = t.reshape({-1});
  if (t.scalar_type() == at::kComplexFloat) {
    at::Tensor parts = at::view_as_real(flat.contiguous()).to(at::kDouble).contiguous();
    const double* p = parts.data_ptr<double>();
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_TRUE(same_double(p[2 * i], expected_double(values[i][0]))) << "element " << i;
      EXPECT_TRUE(same_double(p[2 * i + 1], expected_double(values[i][1]))) << "element " << i;
    }
  } else if (at::isFloatingType(t.scalar_type())) {
    at::Tensor d = flat.to(at::kDouble).contiguous();
    const double* p = d.data_ptr<double>();
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_TRUE(same_double(p[i], expected_double(values[i])))
          << "element " << i << ": " << p[i] << " vs " << values[i];
    }
  } else {
    at::Tensor l = flat.to(at::kLong).contiguous();
    const int64_t* p = l.data_ptr<int64_t>();
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(p[i], values[i].get<int64_t>()) << "element " << i;
    }
  }
}

std::map<std::string, std::string> expected_metadata(const std::string& file) {
  return safetensors_expected()["files"][file]["metadata"]
      .get<std::map<std::string, std::string>>();
}

// The message of the FormatError `f` throws; fails the test if it throws nothing or another type.
template <typename F>
std::string format_error_of(F&& f) {
  try {
    f();
  } catch (const concord::FormatError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected concord::FormatError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected concord::FormatError, nothing thrown";
  return "";
}

const std::vector<std::string> kPythonFiles = {"all_dtypes.safetensors",
                                               "scalars_empty.safetensors",
                                               "escapes.safetensors",
                                               "multi_metadata.safetensors"};

}  // namespace

// ---- reading what Python wrote -----------------------------------------------------------------

TEST(Safetensors, ReadsPythonFilesValueForValue) {
  for (const auto& file : kPythonFiles) {
    const json& want = safetensors_expected()["files"][file];
    SafetensorsFile st(st_fixture(file));
    std::vector<std::string> want_keys;
    for (const auto& [name, _] : want["tensors"].items()) want_keys.push_back(name);
    EXPECT_EQ(st.keys(), want_keys) << file;  // json's object keys are sorted, as keys() is
    EXPECT_EQ(st.metadata(), expected_metadata(file)) << file;
    for (const auto& [name, desc] : want["tensors"].items()) {
      expect_matches(st.get(name), desc, file + ":" + name);
      EXPECT_EQ(st.info(name).shape, desc["shape"].get<std::vector<int64_t>>());
    }
  }
}

TEST(Safetensors, LoadFromMemoryMatchesFileReader) {
  std::string bytes = concord::read_file(st_fixture("all_dtypes.safetensors"));
  auto from_memory = load_safetensors_from_memory(u8(bytes), bytes.size(), "<memory>");
  auto from_file = load_safetensors(st_fixture("all_dtypes.safetensors"));
  ASSERT_EQ(from_memory.size(), 12u);
  ASSERT_EQ(from_file.size(), 12u);
  for (const auto& [name, t] : from_file) {
    EXPECT_TRUE(from_memory.at(name).equal(t)) << name;
    expect_matches(from_memory.at(name),
                   safetensors_expected()["files"]["all_dtypes.safetensors"]["tensors"][name],
                   name);
  }
}

TEST(Safetensors, InfoGivesDtypeShapeAndByteRange) {
  SafetensorsFile st(st_fixture("all_dtypes.safetensors"));
  const auto& info = st.info("f64");
  EXPECT_EQ(info.dtype, SafetensorsDtype::F64);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(info.nbytes(), 48u);
  // The byte range holds exactly the tensor's little-endian bytes.
  double first;
  std::memcpy(&first, st.mapped_data() + info.file_begin, 8);
  EXPECT_EQ(first, 1e300);
  EXPECT_THROW(st.info("absent"), concord::Error);
}

TEST(Safetensors, UnsupportedDtypeIsReportedPerTensor) {
  // F8_E4M3 and U16 have no LibTorch 1.13 type: the file opens, other tensors load, and asking
  // for those names the dtype and the tensor.
  SafetensorsFile st(st_fixture("unsupported.safetensors"));
  EXPECT_EQ(st.keys(), (std::vector<std::string>{"fp8", "ok", "u16"}));
  EXPECT_EQ(st.info("fp8").dtype, SafetensorsDtype::F8_E4M3);
  EXPECT_EQ(st.info("u16").dtype, SafetensorsDtype::U16);
  expect_matches(st.get("ok"),
                 safetensors_expected()["files"]["unsupported.safetensors"]["tensors"]["ok"], "ok");
  try {
    st.get("fp8");
    FAIL() << "no error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported dtype F8_E4M3 for tensor \"fp8\""),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("unsupported.safetensors"), std::string::npos);
  }
  EXPECT_THROW(st.get("u16"), concord::Error);
  EXPECT_THROW(load_safetensors(st_fixture("unsupported.safetensors")), concord::Error);
}

// ---- zero-copy ----------------------------------------------------------------------------------

TEST(Safetensors, AlignedTensorsViewTheMapping) {
  SafetensorsFile st(st_fixture("all_dtypes.safetensors"));
  const auto* begin = st.mapped_data();
  const auto* end = begin + st.mapped_size();
  for (const auto& name : st.keys()) {
    ASSERT_TRUE(st.is_zero_copy(name)) << name;
    at::Tensor t = st.get(name);
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    EXPECT_GE(p, begin) << name;
    EXPECT_LE(p + t.numel() * t.element_size(), end) << name;
    EXPECT_EQ(p, begin + st.info(name).file_begin) << name;
  }
}

TEST(Safetensors, ZeroCopyTensorOutlivesFileAndWritesStayPrivate) {
  TempDir dir;
  fs::path path = dir / "w.safetensors";
  save_safetensors(path, {{"x", at::arange(8, at::kFloat)}});
  const std::string before = concord::read_file(path);
  at::Tensor t;
  {
    SafetensorsFile st(path);
    t = st.get("x");
    ASSERT_TRUE(st.is_zero_copy("x"));
  }  // the file object is gone; the tensor keeps the mapping alive
  EXPECT_TRUE(t.equal(at::arange(8, at::kFloat)));
  t.mul_(2);  // writable: copy-on-write pages, not the file
  EXPECT_EQ(t[7].item<float>(), 14.0f);
  EXPECT_EQ(concord::read_file(path), before);
  EXPECT_TRUE(load_safetensors(path).at("x").equal(at::arange(8, at::kFloat)));
}

TEST(Safetensors, MisalignedTensorIsCopied) {
  // U8[3] then F32[2] at data offset 3: the F32 bytes are not 4-byte aligned, so get() copies.
  std::string header =
      R"({"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3]},)"
      R"("b":{"dtype":"F32","shape":[2],"data_offsets":[3,11]}})";
  header.append((8 - header.size() % 8) % 8, ' ');
  float values[2] = {1.5f, -2.25f};
  std::string data = std::string("\x01\x02\x03", 3) + std::string(reinterpret_cast<char*>(values), 8);
  TempDir dir;
  fs::path path = concord::testing::write_file(dir / "m.safetensors", st_bytes(header, data));
  SafetensorsFile st(path);
  EXPECT_TRUE(st.is_zero_copy("a"));
  EXPECT_FALSE(st.is_zero_copy("b"));
  at::Tensor b = st.get("b");
  const auto* p = static_cast<const uint8_t*>(b.data_ptr());
  EXPECT_TRUE(p < st.mapped_data() || p >= st.mapped_data() + st.mapped_size());
  EXPECT_EQ(b[0].item<float>(), 1.5f);
  EXPECT_EQ(b[1].item<float>(), -2.25f);
  EXPECT_EQ(st.get("a")[2].item<uint8_t>(), 3);
}

// read_into copies a tensor out of its file (pread) without paging the mapping in: the same
// values as get(), every dtype, misaligned ones too, shards through the index; a destination of
// the wrong dtype, size or layout is an error naming the file and the tensor; and once the path
// names another file, the bytes are still the mapped file's.
TEST(Safetensors, ReadIntoCopiesWhatGetViews) {
  SafetensorsFile st(st_fixture("all_dtypes.safetensors"));
  for (const auto& name : st.keys()) {
    const at::Tensor want = st.get(name);
    at::Tensor got = at::empty(want.sizes(), want.options());
    st.read_into(name, got);
    EXPECT_TRUE(got.equal(want)) << name;
    EXPECT_NE(got.data_ptr(), want.data_ptr()) << name;
  }
  ShardedSafetensors ckpt(st_fixture("sharded/model.safetensors.index.json"));
  for (const auto& name : ckpt.keys()) {
    const at::Tensor want = ckpt.get(name);
    at::Tensor got = at::empty(want.sizes(), want.options());
    ckpt.read_into(name, got);
    EXPECT_TRUE(got.equal(want)) << name;
  }
  TempDir dir;
  const fs::path path = dir / "r.safetensors";
  save_safetensors(path, {{"x", at::arange(6, at::kFloat)}, {"y", at::ones({2, 3}, at::kDouble)}});
  SafetensorsFile file(path);
  auto expect_rejected = [&](const at::Tensor& dest) {
    try {
      file.read_into("x", dest);
      ADD_FAILURE() << "expected an error";
    } catch (const concord::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("r.safetensors"), std::string::npos) << msg;
      EXPECT_NE(msg.find("\"x\""), std::string::npos) << msg;
    }
  };
  expect_rejected(at::empty({6}, at::kDouble));
  expect_rejected(at::empty({5}, at::kFloat));
  expect_rejected(at::empty({2, 6}, at::kFloat).narrow(1, 0, 3));
  // Replace the file under its name: read_into still returns the mapped file's bytes.
  save_safetensors(path, {{"x", at::full({6}, 7.0f)}, {"y", at::zeros({2, 3}, at::kDouble)}});
  at::Tensor x = at::empty({6}, at::kFloat);
  file.read_into("x", x);
  EXPECT_TRUE(x.equal(at::arange(6, at::kFloat)));
}

// ---- writing what Python writes -------------------------------------------------------------------

TEST(Safetensors, WritesBytesIdenticalToPython) {
  // Same tensors, same metadata (one entry or none): byte for byte what safetensors 0.8 wrote.
  for (const std::string file :
       {"all_dtypes.safetensors", "scalars_empty.safetensors", "escapes.safetensors"}) {
    auto tensors = load_safetensors(st_fixture(file));
    std::string python = concord::read_file(st_fixture(file));
    EXPECT_EQ(serialize_safetensors(tensors, expected_metadata(file)), python) << file;
    TempDir dir;
    save_safetensors(dir / "out.safetensors", tensors, expected_metadata(file));
    EXPECT_EQ(concord::read_file(dir / "out.safetensors"), python) << file;
  }
}

TEST(Safetensors, SeveralMetadataEntriesGiveAnEquivalentHeader) {
  // Python orders several metadata entries by hash, Concord by key: the header JSON is equal as
  // JSON and the data bytes are identical.
  const std::string file = "multi_metadata.safetensors";
  std::string python = concord::read_file(st_fixture(file));
  std::string ours = serialize_safetensors(load_safetensors(st_fixture(file)),
                                           expected_metadata(file));
  ASSERT_EQ(ours.size(), python.size());
  auto header_of = [](const std::string& b) {
    uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    return std::pair(json::parse(b.substr(8, n)), b.substr(8 + n));
  };
  auto [ours_header, ours_data] = header_of(ours);
  auto [python_header, python_data] = header_of(python);
  EXPECT_EQ(ours_header, python_header);
  EXPECT_EQ(ours_data, python_data);
  EXPECT_EQ(ours_header["__metadata__"].size(), 4u);
}

TEST(Safetensors, WriterOrdersByDtypeRankThenNameAndPadsWithSpaces) {
  std::map<std::string, at::Tensor> t = {{"z", at::zeros({1}, at::kByte)},
                                         {"a", at::zeros({1}, at::kByte)},
                                         {"f", at::zeros({1}, at::kDouble)},
                                         {"i", at::zeros({1}, at::kLong)},
                                         {"h", at::zeros({2}, at::kHalf)}};
  // I64 ranks above F64 in the reference's enum, though both are 8 bytes; names break ties.
  const std::string json_text =
      R"({"i":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
      R"("f":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
      R"("h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},)"
      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[20,21]},)"
      R"("z":{"dtype":"U8","shape":[1],"data_offsets":[21,22]}})";
  ASSERT_NE(json_text.size() % 8, 0u);  // so the padding is exercised
  const std::string padded = json_text + std::string(8 - json_text.size() % 8, ' ');
  std::string bytes = serialize_safetensors(t);
  EXPECT_EQ(bytes.substr(0, 8), le64(padded.size()));
  EXPECT_EQ(bytes.substr(8, padded.size()), padded);
  EXPECT_EQ(bytes.size(), 8 + padded.size() + 22);
}

TEST(Safetensors, RoundTripsNonContiguousAndEveryDtype) {
  std::map<std::string, at::Tensor> t;
  at::Tensor base = at::arange(24, at::kDouble).reshape({4, 6}) - 11.5;
  for (auto type : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt,
                    at::kShort, at::kChar, at::kByte, at::kBool, at::kComplexFloat}) {
    t[c10::toString(type)] = base.to(type).t();  // transposed: not contiguous
  }
  TempDir dir;
  save_safetensors(dir / "r.safetensors", t, {{"k", "v"}});
  auto back = load_safetensors(dir / "r.safetensors");
  ASSERT_EQ(back.size(), t.size());
  for (const auto& [name, x] : t) {
    EXPECT_EQ(back.at(name).scalar_type(), x.scalar_type()) << name;
    EXPECT_TRUE(back.at(name).equal(x)) << name;
  }
  EXPECT_EQ(SafetensorsFile(dir / "r.safetensors").metadata().at("k"), "v");
}

TEST(Safetensors, WriterRejectsWhatTheFormatCannotHold) {
  EXPECT_THROW(serialize_safetensors({{"c", at::zeros({2}, at::kComplexDouble)}}), concord::Error);
  EXPECT_THROW(serialize_safetensors({{"__metadata__", at::zeros({2})}}), concord::Error);
  EXPECT_THROW(serialize_safetensors({{"u", at::Tensor()}}), concord::Error);
  EXPECT_THROW(serialize_safetensors({{std::string("bad\xff"), at::zeros({1})}}), concord::Error);
}

// ---- sharded checkpoints ----------------------------------------------------------------------

TEST(Safetensors, ReadsShardedCheckpointAsOneMap) {
  fs::path index = st_fixture("sharded/model.safetensors.index.json");
  ShardedSafetensors ckpt(index);
  const json& want = safetensors_expected()["sharded"]["tensors"];
  ASSERT_EQ(ckpt.size(), want.size());
  for (const auto& [name, desc] : want.items()) expect_matches(ckpt.get(name), desc, name);
  EXPECT_EQ(ckpt.total_size(), 872u);
  EXPECT_EQ(ckpt.shard_path("model.layers.1.big").filename(), "model-00002-of-00003.safetensors");
  EXPECT_EQ(ckpt.shard_paths().size(), 3u);
  EXPECT_EQ(load_safetensors_sharded(index).size(), want.size());
  EXPECT_EQ(load_safetensors_checkpoint(st_fixture("sharded")).size(), want.size());
}

TEST(Safetensors, WritesShardsAndIndexIdenticalToTransformers) {
  auto tensors = load_safetensors_sharded(st_fixture("sharded/model.safetensors.index.json"));
  uint64_t max_shard = safetensors_expected()["sharded"]["max_shard_size"].get<uint64_t>();
  TempDir dir;
  auto written = save_safetensors_sharded(dir.path(), tensors, max_shard);
  ASSERT_EQ(written.size(), 4u);
  EXPECT_EQ(written.back().filename(), "model.safetensors.index.json");
  for (const auto& path : written) {
    EXPECT_EQ(concord::read_file(path),
              concord::read_file(st_fixture("sharded/" + path.filename().string())))
        << path.filename();
  }
}

TEST(Safetensors, ShardPlanFollowsTheHubRule) {
  std::map<std::string, at::Tensor> t = {{"a", at::zeros({10}, at::kByte)},
                                         {"b", at::zeros({10}, at::kByte)},
                                         {"c", at::zeros({30}, at::kByte)},
                                         {"d", at::zeros({5}, at::kByte)},
                                         {"e", at::zeros({16}, at::kByte)}};
  auto plan = plan_safetensors_shards(t, 20);
  // a+b fill the current shard (20 is not over 20); c (30 > 20) gets a shard of its own, which
  // the hub appends before the one being filled; d closes a+b (20 + 5 > 20); e closes d.
  EXPECT_EQ(plan.at("c"), "model-00001-of-00004.safetensors");
  EXPECT_EQ(plan.at("a"), "model-00002-of-00004.safetensors");
  EXPECT_EQ(plan.at("b"), "model-00002-of-00004.safetensors");
  EXPECT_EQ(plan.at("d"), "model-00003-of-00004.safetensors");
  EXPECT_EQ(plan.at("e"), "model-00004-of-00004.safetensors");
  // Everything in one shard: transformers' single file, no index.
  TempDir dir;
  auto written = save_safetensors_sharded(dir.path(), t, 1000);
  ASSERT_EQ(written.size(), 1u);
  EXPECT_EQ(written[0].filename(), "model.safetensors");
  EXPECT_EQ(load_safetensors_checkpoint(dir.path()).size(), 5u);
}

TEST(Safetensors, RejectsBadIndexes) {
  TempDir dir;
  fs::copy(st_fixture("sharded/model-00001-of-00003.safetensors"), dir / "s.safetensors");
  auto index_with = [&](const std::string& text) {
    return concord::testing::write_file(dir / "model.safetensors.index.json", text);
  };
  struct Case { std::string text, message; };
  const std::vector<Case> cases = {
      {"{nope", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {R"({"metadata":{}})", "weight_map is missing"},
      {R"({"weight_map":[]})", "weight_map is missing"},
      {R"({"weight_map":{"lm_head.weight":3}})", "must be a file name"},
      {R"({"weight_map":{"lm_head.weight":"../s.safetensors"}})", "not a relative path"},
      {R"({"weight_map":{"lm_head.weight":"a/..\\..\\s.safetensors"}})", "not a relative path"},
      {R"({"weight_map":{"lm_head.weight":"/tmp/s.safetensors"}})", "not a relative path"},
      {R"({"weight_map":{"lm_head.weight":"C:s.safetensors"}})", "not a relative path"},
      {R"({"weight_map":{"lm_head.weight":"s.bin"}})", "does not end in .safetensors"},
      {R"({"weight_map":{"missing":"s.safetensors"}})", "has no such tensor"},
      {R"({"metadata":3,"weight_map":{}})", "metadata must be an object"},
  };
  for (const auto& c : cases) {
    fs::path index = index_with(c.text);
    std::string msg = format_error_of([&] { ShardedSafetensors s(index); });
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.text << " -> " << msg;
    EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
  }
  // A valid one over the copied shard works.
  ShardedSafetensors ok(index_with(R"({"weight_map":{"lm_head.weight":"s.safetensors"}})"));
  EXPECT_EQ(ok.keys(), std::vector<std::string>{"lm_head.weight"});
  EXPECT_FALSE(ok.total_size().has_value());
}

// ---- malformed files ---------------------------------------------------------------------------

namespace {

struct Malformed {
  const char* what;
  std::string bytes;
  const char* message;  // a piece of the expected error
};

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

std::vector<Malformed> malformed_cases() {
  const std::string u8_2 = entry("a", "\"U8\"", "[2]", "[0,2]");
  return {
      {"empty file", "", "too short for the 8-byte header length"},
      {"7 bytes", std::string(7, '\0'), "too short"},
      {"header past end", le64(100) + "{}", "header length 100 runs past the end of the file"},
      {"absurd header", le64(1ull << 40) + "{}", "exceeds the 100000000-byte limit"},
      {"max u64 header", le64(~0ull) + "{}", "exceeds"},
      {"not json", st_bytes("{abc"), "header is not valid JSON"},
      {"json trailing garbage", st_bytes("{}x"), "header is not valid JSON"},
      {"nul padding", st_bytes(std::string("{}\0\0", 4)), "header is not valid JSON"},
      {"invalid utf-8", st_bytes("{\"\xff\":1}"), "header is not valid JSON"},
      {"array root", st_bytes("[]"), "header must be a JSON object, got array"},
      {"string root", st_bytes("\"x\""), "header must be a JSON object"},
      {"entry not object", st_bytes(R"({"a":1})"), "tensor \"a\": entry must be a JSON object"},
      {"missing dtype", st_bytes(R"({"a":{"shape":[],"data_offsets":[0,0]}})"), "missing dtype"},
      {"missing shape", st_bytes(R"({"a":{"dtype":"U8","data_offsets":[0,0]}})"), "missing shape"},
      {"missing offsets", st_bytes(R"({"a":{"dtype":"U8","shape":[0]}})"), "missing data_offsets"},
      {"dtype not string", st_bytes("{" + entry("a", "5", "[0]", "[0,0]") + "}"),
       "dtype must be a string"},
      {"unknown dtype", st_bytes("{" + entry("a", "\"F128\"", "[0]", "[0,0]") + "}"),
       "tensor \"a\": unknown dtype \"F128\""},
      {"lowercase dtype", st_bytes("{" + entry("a", "\"f32\"", "[0]", "[0,0]") + "}"),
       "unknown dtype"},
      {"shape not array", st_bytes("{" + entry("a", "\"U8\"", "2", "[0,2]") + "}", "ab"),
       "shape must be an array"},
      {"negative dim", st_bytes("{" + entry("a", "\"U8\"", "[-2]", "[0,2]") + "}", "ab"),
       "shape holds a negative number -2"},
      {"float dim", st_bytes("{" + entry("a", "\"U8\"", "[2.0]", "[0,2]") + "}", "ab"),
       "shape must hold non-negative integers"},
      {"string dim", st_bytes("{" + entry("a", "\"U8\"", "[\"2\"]", "[0,2]") + "}", "ab"),
       "shape must hold non-negative integers"},
      {"dim beyond u64", st_bytes("{" + entry("a", "\"U8\"", "[18446744073709551616]", "[0,2]") + "}",
                                  "ab"),
       "shape must hold non-negative integers"},
      {"dim beyond i64", st_bytes("{" + entry("a", "\"U8\"", "[9223372036854775808]", "[0,2]") + "}",
                                  "ab"),
       "overflows a 64-bit element count"},
      {"shape product overflow",
       st_bytes("{" + entry("a", "\"U8\"", "[4294967296,4294967296]", "[0,2]") + "}", "ab"),
       "overflows a 64-bit element count"},
      {"overflow hidden behind a zero",
       st_bytes("{" + entry("a", "\"U8\"", "[0,4294967296,4294967296]", "[0,0]") + "}"),
       "overflows a 64-bit element count"},
      {"byte count overflow",
       st_bytes("{" + entry("a", "\"F64\"", "[2305843009213693952]", "[0,2]") + "}", "ab"),
       "overflows a 64-bit byte count"},
      {"offsets not array", st_bytes("{" + entry("a", "\"U8\"", "[2]", "2") + "}", "ab"),
       "data_offsets must be [begin, end]"},
      {"one offset", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[2]") + "}", "ab"),
       "data_offsets must be [begin, end]"},
      {"three offsets", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[0,2,2]") + "}", "ab"),
       "data_offsets must be [begin, end]"},
      {"negative offset", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[-1,2]") + "}", "ab"),
       "data_offsets holds a negative number -1"},
      {"begin after end", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[4,2]") + "}", "abcd"),
       "data_offsets begin 4 > end 2"},
      {"offset out of bounds", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[0,2]") + "}", "a"),
       "run past the data buffer, which holds 1 bytes"},
      {"1 TB tensor in a tiny file",
       st_bytes("{" + entry("a", "\"U8\"", "[1099511627776]", "[0,1099511627776]") + "}", "ab"),
       "data_offsets [0,1099511627776] run past the data buffer, which holds 2 bytes"},
      {"1 TB shape over two bytes",
       st_bytes("{" + entry("a", "\"F32\"", "[262144,1048576]", "[0,2]") + "}", "ab"),
       "needs 1099511627776 bytes but data_offsets [0,2] span 2"},
      {"huge offset", st_bytes("{" + entry("a", "\"U8\"", "[2]", "[18446744073709551613,18446744073709551615]") + "}", "ab"),
       "run past the data buffer"},
      {"size mismatch", st_bytes("{" + entry("a", "\"F32\"", "[2]", "[0,4]") + "}", "abcd"),
       "needs 8 bytes but data_offsets [0,4] span 4"},
      {"sub-byte remainder", st_bytes("{" + entry("a", "\"F4\"", "[3]", "[0,2]") + "}", "ab"),
       "do not fill whole bytes"},
      {"gap at start", st_bytes("{" + entry("a", "\"U8\"", "[1]", "[1,2]") + "}", "ab"),
       "gap before it: data bytes [0,1) belong to no tensor"},
      {"gap between",
       st_bytes("{" + u8_2 + "," + entry("b", "\"U8\"", "[1]", "[3,4]") + "}", "abcd"),
       "tensor \"b\": gap before it"},
      {"overlap",
       st_bytes("{" + u8_2 + "," + entry("b", "\"U8\"", "[2]", "[1,3]") + "}", "abc"),
       "tensor \"b\": data_offsets [1,3] overlap the previous tensor, which ends at 2"},
      {"same range twice",
       st_bytes("{" + u8_2 + "," + entry("b", "\"U8\"", "[2]", "[0,2]") + "}", "ab"),
       "overlap the previous tensor"},
      {"trailing data", st_bytes("{" + u8_2 + "}", "abc"),
       "the data buffer holds 3 bytes but the tensors cover 2"},
      {"no tensors, trailing data", st_bytes("{}", "x"), "holds 1 bytes but the tensors cover 0"},
      {"duplicate tensor",
       st_bytes("{" + u8_2 + "," + entry("a", "\"U8\"", "[2]", "[0,2]") + "}", "ab"),
       "header has the key \"a\" twice"},
      {"duplicate field",
       st_bytes(R"({"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "ab"),
       "header has the key \"dtype\" twice"},
      {"duplicate metadata key", st_bytes(R"({"__metadata__":{"k":"1","k":"2"}})"),
       "header has the key \"k\" twice"},
      {"metadata not object", st_bytes(R"({"__metadata__":[1]})"),
       "__metadata__ must be an object of strings"},
      {"metadata value not string", st_bytes(R"({"__metadata__":{"k":1}})"),
       "__metadata__ key \"k\" must hold a string, got 1"},
      {"deep nesting", st_bytes(R"({"a":[[[[[[[[[[[[1]]]]]]]]]]]]})"),
       "header JSON nests deeper than 8 levels"},
      {"newline in name is quoted",
       st_bytes("{" + entry("a\\nb", "\"U8\"", "[3]", "[0,2]") + "}", "ab"),
       "tensor \"a\\nb\": shape [3] of \"U8\" needs 3 bytes"},
  };
}

}  // namespace

TEST(Safetensors, RejectsMalformedHeadersByName) {
  for (const auto& c : malformed_cases()) {
    std::string msg = format_error_of(
        [&] { parse_safetensors_header(u8(c.bytes), c.bytes.size(), "<memory>"); });
    EXPECT_EQ(msg.rfind("<memory>: ", 0), 0u) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.what << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.what << ": " << msg;
  }
}

TEST(Safetensors, RejectsMalformedFilesNamingThePath) {
  TempDir dir;
  for (const auto& c : malformed_cases()) {
    fs::path path = concord::testing::write_file(dir / "bad.safetensors", c.bytes);
    std::string msg = format_error_of([&] { SafetensorsFile st(path); });
    EXPECT_EQ(msg.rfind(path.string() + ": ", 0), 0u) << c.what << ": " << msg;
    EXPECT_NE(msg.find(c.message), std::string::npos) << c.what << ": " << msg;
  }
}

TEST(Safetensors, AcceptsWhatTheReferenceAccepts) {
  // Entries in any JSON order, __metadata__ null, whitespace around the JSON, extra entry
  // fields, empty tensors sharing an offset, and tensors that tile in offset order.
  std::string header =
      R"(  {"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2],"extra":true},)"
      R"("__metadata__":null,"e":{"dtype":"F32","shape":[0,3],"data_offsets":[1,1]},)"
      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}   )";
  std::string bytes = st_bytes(header, "\x07\x09");
  SafetensorsHeader h = parse_safetensors_header(u8(bytes), bytes.size(), "<memory>");
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].first, "a");
  EXPECT_TRUE(h.metadata.empty());
  auto t = load_safetensors_from_memory(u8(bytes), bytes.size(), "<memory>");
  EXPECT_EQ(t.at("b").item<uint8_t>(), 9);
  EXPECT_EQ(t.at("e").sizes().vec(), (std::vector<int64_t>{0, 3}));
  // A header-only file with no tensors is valid too (what Python writes for {}).
  std::string empty = st_bytes("{}      ");
  EXPECT_TRUE(load_safetensors_from_memory(u8(empty), empty.size(), "<memory>").empty());
}

TEST(Safetensors, RejectsBoolBytesOtherThanZeroAndOne) {
  std::string bytes = st_bytes(R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})",
                               std::string("\x01\x00\x02", 3));
  std::string msg = format_error_of(
      [&] { load_safetensors_from_memory(u8(bytes), bytes.size(), "<memory>"); });
  EXPECT_NE(msg.find("tensor \"m\": BOOL byte 2 is 2, not 0 or 1"), std::string::npos) << msg;
  TempDir dir;
  fs::path path = concord::testing::write_file(dir / "b.safetensors", bytes);
  SafetensorsFile st(path);  // the header is fine; the values are checked when read
  EXPECT_THROW(st.get("m"), concord::FormatError);
}

TEST(Safetensors, DtypeTablesAgree) {
  for (int i = 0; i <= static_cast<int>(SafetensorsDtype::U64); ++i) {
    auto d = static_cast<SafetensorsDtype>(i);
    EXPECT_EQ(parse_safetensors_dtype(safetensors_dtype_name(d)), d);
    if (auto type = safetensors_to_scalar_type(d)) {
      EXPECT_EQ(scalar_type_to_safetensors(*type), d);
      EXPECT_EQ(c10::elementSize(*type) * 8, static_cast<size_t>(safetensors_dtype_bits(d)));
    }
  }
  EXPECT_FALSE(parse_safetensors_dtype("F128").has_value());
}
