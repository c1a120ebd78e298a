#include "concord/io/safetensors.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <ostream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace concord::io {

namespace {

// The reference implementation refuses headers above 100 MB; so do we, before reading a byte of
// it, so a forged length can never make us allocate.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// A valid header nests three deep (root object > tensor entry > shape array). The limit keeps a
// forged "[[[[..." from costing memory or stack in the JSON library.
constexpr int kMaxJsonDepth = 8;

struct DtypeRow {
  SafetensorsDtype dtype;
  const char* name;
  int bits;
};

// In enum order, so kDtypes[int(d)].dtype == d.
constexpr std::array<DtypeRow, 22> kDtypes{{
    {SafetensorsDtype::BOOL, "BOOL", 8},
    {SafetensorsDtype::F4, "F4", 4},
    {SafetensorsDtype::F6_E2M3, "F6_E2M3", 6},
    {SafetensorsDtype::F6_E3M2, "F6_E3M2", 6},
    {SafetensorsDtype::U8, "U8", 8},
    {SafetensorsDtype::I8, "I8", 8},
    {SafetensorsDtype::F8_E5M2, "F8_E5M2", 8},
    {SafetensorsDtype::F8_E4M3, "F8_E4M3", 8},
    {SafetensorsDtype::F8_E8M0, "F8_E8M0", 8},
    {SafetensorsDtype::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8},
    {SafetensorsDtype::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8},
    {SafetensorsDtype::I16, "I16", 16},
    {SafetensorsDtype::U16, "U16", 16},
    {SafetensorsDtype::F16, "F16", 16},
    {SafetensorsDtype::BF16, "BF16", 16},
    {SafetensorsDtype::I32, "I32", 32},
    {SafetensorsDtype::U32, "U32", 32},
    {SafetensorsDtype::F32, "F32", 32},
    {SafetensorsDtype::C64, "C64", 64},
    {SafetensorsDtype::F64, "F64", 64},
    {SafetensorsDtype::I64, "I64", 64},
    {SafetensorsDtype::U64, "U64", 64},
}};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses the header JSON, refusing duplicate keys at any level (the reference keeps the last
// silently; a file that names a tensor twice is ambiguous, so we reject it) and deep nesting.
json parse_header_json(const char* begin, const char* end, const std::string& source) {
  std::vector<std::set<std::string>> seen;  // keys of each open object
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) {
      fail_format(source, "header JSON nests deeper than ", kMaxJsonDepth, " levels");
    }
    switch (event) {
      case json::parse_event_t::object_start:
        seen.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!seen.empty()) seen.pop_back();
        break;
      case json::parse_event_t::key: {
        const auto& key = parsed.get_ref<const std::string&>();
        if (!seen.empty() && !seen.back().insert(key).second) {
          fail_format(source, "header has the key ", json_quoted(key), " twice");
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(begin, end, cb);
  } catch (const json::exception& e) {
    fail_format(source, "header is not valid JSON: ", e.what());
  }
}

uint64_t header_uint(const json& v, const std::string& source, const std::string& name,
                     const char* field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    fail_format(source, "tensor ", json_quoted(name), ": ", field, " holds a negative number ",
                v.get<int64_t>());
  }
  fail_format(source, "tensor ", json_quoted(name), ": ", field,
              " must hold non-negative integers, got ", v.dump());
}

SafetensorsTensorInfo parse_entry(const std::string& name, const json& entry, uint64_t data_size,
                                  uint64_t data_start, const std::string& source) {
  if (!entry.is_object()) {
    fail_format(source, "tensor ", json_quoted(name), ": entry must be a JSON object, got ",
                entry.type_name());
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field))
      fail_format(source, "tensor ", json_quoted(name), ": missing ", field);
  }
  SafetensorsTensorInfo info;

  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) {
    fail_format(source, "tensor ", json_quoted(name), ": dtype must be a string, got ",
                dtype.dump());
  }
  auto parsed = parse_safetensors_dtype(dtype.get_ref<const std::string&>());
  if (!parsed) {
    fail_format(source, "tensor ", json_quoted(name), ": unknown dtype ", dtype.dump());
  }
  info.dtype = *parsed;

  const json& shape = entry.at("shape");
  if (!shape.is_array()) {
    fail_format(source, "tensor ", json_quoted(name), ": shape must be an array, got ",
                shape.dump());
  }
  // LibTorch computes strides as products of trailing dimensions, so the product of the non-zero
  // dimensions must fit int64 even when a zero makes the tensor empty.
  uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const json& d : shape) {
    uint64_t dim = header_uint(d, source, name, "shape");
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        (dim != 0 && __builtin_mul_overflow(nonzero_product, dim, &nonzero_product)) ||
        nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail_format(source, "tensor ", json_quoted(name), ": shape ", shape.dump(),
                  " overflows a 64-bit element count");
    }
    has_zero = has_zero || dim == 0;
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  uint64_t numel = has_zero ? 0 : nonzero_product;

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) {
    fail_format(source, "tensor ", json_quoted(name), ": data_offsets must be [begin, end], got ",
                offsets.dump());
  }
  uint64_t begin = header_uint(offsets[0], source, name, "data_offsets");
  uint64_t end = header_uint(offsets[1], source, name, "data_offsets");
  if (begin > end) {
    fail_format(source, "tensor ", json_quoted(name), ": data_offsets begin ", begin, " > end ",
                end);
  }
  if (end > data_size) {
    fail_format(source, "tensor ", json_quoted(name), ": data_offsets [", begin, ",", end,
                "] run past the data buffer, which holds ", data_size, " bytes");
  }

  uint64_t bits = 0;
  int dtype_bits = safetensors_dtype_bits(info.dtype);
  if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_bits), &bits)) {
    fail_format(source, "tensor ", json_quoted(name), ": shape ", shape.dump(),
                " overflows a 64-bit byte count");
  }
  if (bits % 8 != 0) {
    fail_format(source, "tensor ", json_quoted(name), ": ", numel, " elements of ", dtype.dump(),
                " do not fill whole bytes");
  }
  if (bits / 8 != end - begin) {
    fail_format(source, "tensor ", json_quoted(name), ": shape ", shape.dump(), " of ",
                dtype.dump(), " needs ", bits / 8, " bytes but data_offsets [", begin, ",", end,
                "] span ", end - begin);
  }
  info.file_begin = data_start + begin;
  info.file_end = data_start + end;
  return info;
}

// BOOL bytes other than 0 and 1 are undefined behaviour in LibTorch's kernels, so they are
// rejected rather than handed on.
void check_bool_bytes(const uint8_t* p, uint64_t n, const std::string& name,
                      const std::string& source) {
  for (uint64_t i = 0; i < n; ++i) {
    if (p[i] > 1) {
      fail_format(source, "tensor ", json_quoted(name), ": BOOL byte ", i, " is ",
                  static_cast<int>(p[i]), ", not 0 or 1");
    }
  }
}

at::ScalarType torch_type_or_throw(const SafetensorsTensorInfo& info, const std::string& name,
                                   const std::string& source) {
  auto type = safetensors_to_scalar_type(info.dtype);
  if (!type) {
    fail(source, ": unsupported dtype ", safetensors_dtype_name(info.dtype), " for tensor ",
         json_quoted(name), " (LibTorch 1.13 has no such type)");
  }
  return *type;
}

at::Tensor copy_tensor(const uint8_t* base, const SafetensorsTensorInfo& info,
                       at::ScalarType type) {
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(type));
  if (info.nbytes() > 0) std::memcpy(t.data_ptr(), base + info.file_begin, info.nbytes());
  return t;
}

struct PreparedTensor {
  const std::string* name;
  at::Tensor data;  // contiguous, on the CPU
  SafetensorsDtype dtype;
};

// The header and the tensors in file order, as the reference's `prepare()` lays them out.
std::pair<std::string, std::vector<PreparedTensor>> prepare(
    const std::map<std::string, at::Tensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<PreparedTensor> prepared;
  prepared.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    CONCORD_CHECK(tensor.defined(), "save_safetensors: tensor ", json_quoted(name),
                  " is undefined");
    CONCORD_CHECK(tensor.layout() == at::kStrided, "save_safetensors: tensor ", json_quoted(name),
                  " is not dense (layout ", tensor.layout(), ")");
    CONCORD_CHECK(name != "__metadata__",
                  "save_safetensors: \"__metadata__\" is reserved and cannot name a tensor");
    SafetensorsDtype dtype = scalar_type_to_safetensors(tensor.scalar_type());
    prepared.push_back({&name, tensor.to(at::kCPU).contiguous(), dtype});
  }
  // Descending dtype rank, then name (bytewise, as Rust compares Strings). The rank is the
  // reference's enum order, which is by alignment but not only: I64 sorts before F64.
  std::stable_sort(prepared.begin(), prepared.end(),
                   [](const PreparedTensor& a, const PreparedTensor& b) {
                     if (a.dtype != b.dtype) return a.dtype > b.dtype;
                     return *a.name < *b.name;
                   });

  // serde_json's compact form; nlohmann's string escaping matches it (\" \\ \b \f \n \r \t,
  // \u00xx for other control characters, UTF-8 as is).
  auto str = [](const std::string& s) {
    try {
      return json(s).dump();
    } catch (const json::exception&) {
      fail("save_safetensors: ", json_quoted(s), " is not valid UTF-8");
    }
  };
  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      header += (first ? "" : ",") + str(k) + ":" + str(v);
      first = false;
    }
    header += "}";
    if (!prepared.empty()) header += ",";
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < prepared.size(); ++i) {
    const auto& p = prepared[i];
    uint64_t n = static_cast<uint64_t>(p.data.numel()) * p.data.element_size();
    header += (i ? "," : "") + str(*p.name) + ":{\"dtype\":\"" +
              std::string(safetensors_dtype_name(p.dtype)) + "\",\"shape\":" +
              shape_text(p.data.sizes().vec()) + ",\"data_offsets\":[" + std::to_string(offset) +
              "," + std::to_string(offset + n) + "]}";
    offset += n;
  }
  header += "}";
  // Pad with spaces so the data buffer starts 8-byte aligned, as the format asks.
  header.append((8 - header.size() % 8) % 8, ' ');
  return {std::move(header), std::move(prepared)};
}

void write_prepared(std::ostream& out, const std::string& header,
                    const std::vector<PreparedTensor>& tensors) {
  uint64_t n = header.size();
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out.write(len, 8);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const auto& p : tensors) {
    size_t bytes = static_cast<size_t>(p.data.numel()) * p.data.element_size();
    if (bytes) out.write(static_cast<const char*>(p.data.data_ptr()),
                         static_cast<std::streamsize>(bytes));
  }
}

}  // namespace

std::string_view safetensors_dtype_name(SafetensorsDtype dtype) {
  return kDtypes[static_cast<size_t>(dtype)].name;
}

std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view name) {
  for (const auto& row : kDtypes) {
    if (name == row.name) return row.dtype;
  }
  return std::nullopt;
}

int safetensors_dtype_bits(SafetensorsDtype dtype) {
  return kDtypes[static_cast<size_t>(dtype)].bits;
}

std::optional<at::ScalarType> safetensors_to_scalar_type(SafetensorsDtype dtype) {
  switch (dtype) {
    case SafetensorsDtype::BOOL: return at::kBool;
    case SafetensorsDtype::U8: return at::kByte;
    case SafetensorsDtype::I8: return at::kChar;
    case SafetensorsDtype::I16: return at::kShort;
    case SafetensorsDtype::F16: return at::kHalf;
    case SafetensorsDtype::BF16: return at::kBFloat16;
    case SafetensorsDtype::I32: return at::kInt;
    case SafetensorsDtype::F32: return at::kFloat;
    case SafetensorsDtype::C64: return at::kComplexFloat;
    case SafetensorsDtype::F64: return at::kDouble;
    case SafetensorsDtype::I64: return at::kLong;
    default: return std::nullopt;
  }
}

SafetensorsDtype scalar_type_to_safetensors(at::ScalarType type) {
  switch (type) {
    case at::kBool: return SafetensorsDtype::BOOL;
    case at::kByte: return SafetensorsDtype::U8;
    case at::kChar: return SafetensorsDtype::I8;
    case at::kShort: return SafetensorsDtype::I16;
    case at::kHalf: return SafetensorsDtype::F16;
    case at::kBFloat16: return SafetensorsDtype::BF16;
    case at::kInt: return SafetensorsDtype::I32;
    case at::kFloat: return SafetensorsDtype::F32;
    case at::kComplexFloat: return SafetensorsDtype::C64;
    case at::kDouble: return SafetensorsDtype::F64;
    case at::kLong: return SafetensorsDtype::I64;
    default: fail("safetensors has no dtype for LibTorch's ", c10::toString(type));
  }
}

int64_t SafetensorsTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // validated by the parser not to overflow
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& source) {
  if (size < 8) {
    fail_format(source, "file is ", size, " bytes, too short for the 8-byte header length");
  }
  uint64_t n = read_u64_le(data);
  if (n > kMaxHeaderBytes) {
    fail_format(source, "header length ", n, " exceeds the ", kMaxHeaderBytes, "-byte limit");
  }
  if (n > size - 8) {
    fail_format(source, "header length ", n, " runs past the end of the file (", size,
                " bytes)");
  }
  const char* text = reinterpret_cast<const char*>(data + 8);
  // nlohmann's lexer takes a NUL byte for the end of input and would accept "{}\0garbage";
  // a NUL is never valid in JSON text, so refuse it first.
  if (const void* nul = std::memchr(text, '\0', n)) {
    fail_format(source, "header is not valid JSON: NUL byte at header offset ",
                static_cast<const char*>(nul) - text);
  }
  json root = parse_header_json(text, text + n, source);
  if (!root.is_object()) {
    fail_format(source, "header must be a JSON object, got ", root.type_name());
  }

  SafetensorsHeader header;
  header.data_start = 8 + n;
  const uint64_t data_size = size - header.data_start;
  header.tensors.reserve(root.size());
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;  // the reference reads null as "no metadata"
      if (!value.is_object()) {
        fail_format(source, "__metadata__ must be an object of strings, got ", value.type_name());
      }
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) {
          fail_format(source, "__metadata__ key ", json_quoted(mk), " must hold a string, got ",
                      mv.dump());
        }
        header.metadata.emplace(mk, mv.get<std::string>());
      }
      continue;
    }
    header.tensors.emplace_back(key, parse_entry(key, value, data_size, header.data_start,
                                                 source));
  }

  // The format's rule (the reference's `validate`): in offset order, the tensors' byte ranges
  // tile the data buffer exactly: no gap, no overlap, nothing after the last one. The order of
  // the entries in the JSON does not matter.
  std::stable_sort(header.tensors.begin(), header.tensors.end(),
                   [](const auto& a, const auto& b) {
                     return std::pair(a.second.file_begin, a.second.file_end) <
                            std::pair(b.second.file_begin, b.second.file_end);
                   });
  uint64_t expected = header.data_start;
  for (const auto& [name, info] : header.tensors) {
    if (info.file_begin > expected) {
      fail_format(source, "tensor ", json_quoted(name), ": gap before it: data bytes [",
                  expected - header.data_start, ",", info.file_begin - header.data_start,
                  ") belong to no tensor");
    }
    if (info.file_begin < expected) {
      fail_format(source, "tensor ", json_quoted(name), ": data_offsets [",
                  info.file_begin - header.data_start, ",", info.file_end - header.data_start,
                  "] overlap the previous tensor, which ends at ", expected - header.data_start);
    }
    expected = info.file_end;
  }
  if (expected != size) {
    fail_format(source, "the data buffer holds ", data_size, " bytes but the tensors cover ",
                expected - header.data_start);
  }
  return header;
}

std::map<std::string, at::Tensor> load_safetensors_from_memory(const uint8_t* data, size_t size,
                                                               const std::string& source) {
  SafetensorsHeader header = parse_safetensors_header(data, size, source);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, info] : header.tensors) {
    at::ScalarType type = torch_type_or_throw(info, name, source);
    if (type == at::kBool) check_bool_bytes(data + info.file_begin, info.nbytes(), name, source);
    out.emplace(name, copy_tensor(data, info, type));
  }
  return out;
}

// ---- SafetensorsFile ---------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const fs::path& path)
    : path_(path), map_(std::make_shared<MappedFile>(path, MappedFile::Mode::CopyOnWrite)) {
  // Copy-on-write pages (the file never changes) let zero-copy tensors be modified in place, as
  // tensors from Python's safe_open can; a read-only view would crash the first in-place op.
  writable_ = map_->mutable_data() != nullptr || map_->size() == 0;
  header_ = parse_safetensors_header(map_->data(), map_->size(), path.string());
  index_.reserve(header_.tensors.size());
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].first, i);
}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> names;
  names.reserve(header_.tensors.size());
  for (const auto& entry : header_.tensors) names.push_back(entry.first);
  std::sort(names.begin(), names.end());
  return names;
}

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path_.string(), ": no tensor named ", json_quoted(name));
  return header_.tensors[it->second].second;
}

const uint8_t* SafetensorsFile::mapped_data() const { return map_->data(); }
size_t SafetensorsFile::mapped_size() const { return map_->size(); }

bool SafetensorsFile::is_zero_copy(const std::string& name) const {
  const SafetensorsTensorInfo& i = info(name);
  auto type = safetensors_to_scalar_type(i.dtype);
  if (!type || !writable_ || i.nbytes() == 0) return false;
  auto address = reinterpret_cast<uintptr_t>(map_->data() + i.file_begin);
  return address % c10::elementSize(*type) == 0;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsTensorInfo& i = info(name);
  at::ScalarType type = torch_type_or_throw(i, name, path_.string());
  const uint8_t* p = map_->data() + i.file_begin;
  if (type == at::kBool) check_bool_bytes(p, i.nbytes(), name, path_.string());
  if (!is_zero_copy(name)) return copy_tensor(map_->data(), i, type);
  // The deleter owns a reference to the mapping, so the tensor outlives this object safely.
  std::shared_ptr<MappedFile> keep = map_;
  return at::from_blob(const_cast<uint8_t*>(p), i.shape, [keep](void*) {},
                       at::TensorOptions().dtype(type));
}

void SafetensorsFile::read_into(const std::string& name, const at::Tensor& dest) const {
  const SafetensorsTensorInfo& i = info(name);
  const at::ScalarType type = torch_type_or_throw(i, name, path_.string());
  if (!dest.defined() || !dest.device().is_cpu() || !dest.is_contiguous() ||
      dest.scalar_type() != type || dest.numel() != i.numel()) {
    fail(path_.string(), ": tensor ", json_quoted(name), " (", safetensors_dtype_name(i.dtype),
         ", ", i.numel(), " elements) cannot be read into a ",
         dest.defined() ? std::string(c10::toString(dest.scalar_type())) : std::string("undefined"),
         " tensor of ", dest.defined() ? dest.numel() : 0,
         " elements (it must be contiguous, on the CPU, of the same dtype and size)");
  }
  map_->read(i.file_begin, static_cast<size_t>(i.nbytes()), dest.data_ptr());
  if (type == at::kBool) {
    check_bool_bytes(static_cast<const uint8_t*>(dest.data_ptr()), i.nbytes(), name, path_.string());
  }
}

std::map<std::string, at::Tensor> load_safetensors(const fs::path& path) {
  SafetensorsFile file(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& entry : file.header().tensors) out.emplace(entry.first, file.get(entry.first));
  return out;
}

// ---- writing -----------------------------------------------------------------------------------

std::string serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  auto [header, prepared] = prepare(tensors, metadata);
  std::ostringstream out;
  write_prepared(out, header, prepared);
  return out.str();
}

void save_safetensors(const fs::path& path, const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Not a structured binding: C++17 lambdas cannot capture those.
  auto prepared = prepare(tensors, metadata);
  write_file_atomic(path, [&](std::ostream& out) {
    write_prepared(out, prepared.first, prepared.second);
  });
}

}  // namespace concord::io
