// Reader and writer for the safetensors format (https://github.com/huggingface/safetensors,
// "Format" in its README): an 8-byte little-endian header length N, N bytes of UTF-8 JSON
// (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`),
// then the byte buffer that the offsets index. Reading maps the file and returns tensors that
// view the mapping (zero-copy) when the data is aligned for its dtype; writing reproduces the
// Python package's bytes (same tensor order, same JSON, same padding) so the two are
// interchangeable. Sharded checkpoints (`model.safetensors.index.json`) are in
// concord/io/safetensors_sharded.h. docs/io-safetensors.md lists the rules the reader enforces.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace concord {
class MappedFile;
}

namespace concord::io {

/// Every element type the format defines, in the order of the reference implementation's
/// `Dtype` enum. The order matters: the writer sorts tensors by it (descending), as Python does.
enum class SafetensorsDtype : uint8_t {
  BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ,
  I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64,
};

/// The name used in headers ("F32", "BF16", ...).
std::string_view safetensors_dtype_name(SafetensorsDtype dtype);
/// The dtype of a header name; nullopt for a name the format does not define.
std::optional<SafetensorsDtype> parse_safetensors_dtype(std::string_view name);
/// Bits per element (4 for F4, 6 for the F6 types, 8 for BOOL).
int safetensors_dtype_bits(SafetensorsDtype dtype);
/// The LibTorch type of a safetensors dtype; nullopt where LibTorch 1.13 has none (the FP8,
/// FP6, FP4 and unsigned 16/32/64-bit types).
std::optional<at::ScalarType> safetensors_to_scalar_type(SafetensorsDtype dtype);
/// The safetensors dtype of a LibTorch type; throws concord::Error for one the format lacks.
SafetensorsDtype scalar_type_to_safetensors(at::ScalarType type);

/// One header entry.
struct SafetensorsTensorInfo {
  SafetensorsDtype dtype = SafetensorsDtype::F32;
  std::vector<int64_t> shape;
  /// Byte range [file_begin, file_end) in the file: 8 + N + data_offsets.
  uint64_t file_begin = 0;
  uint64_t file_end = 0;

  uint64_t nbytes() const { return file_end - file_begin; }
  int64_t numel() const;
};

/// A parsed, validated header.
struct SafetensorsHeader {
  /// Entries in data-offset order (the order of the bytes in the file).
  std::vector<std::pair<std::string, SafetensorsTensorInfo>> tensors;
  /// `__metadata__`; empty when absent.
  std::map<std::string, std::string> metadata;
  /// 8 + N: where the data buffer starts.
  uint64_t data_start = 0;
};

/// Parses and validates a whole safetensors file held in memory. `source` names it in errors
/// (a path, or e.g. "<memory>"). Throws concord::FormatError for anything malformed (see
/// docs/io-safetensors.md); never reads outside [data, data + size).
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& source);

/// Copies every tensor out of an in-memory safetensors file (the entry point the fuzzer uses).
/// Throws concord::FormatError if malformed, concord::Error for a dtype LibTorch lacks.
std::map<std::string, at::Tensor> load_safetensors_from_memory(const uint8_t* data, size_t size,
                                                               const std::string& source);

/// An open safetensors file. Copies share the mapping; tensors from get() keep it alive.
class SafetensorsFile {
 public:
  /// Maps `path` and validates its header; throws concord::FormatError naming the file.
  explicit SafetensorsFile(const std::filesystem::path& path);
  static SafetensorsFile open(const std::filesystem::path& path) { return SafetensorsFile(path); }

  const std::filesystem::path& path() const { return path_; }
  /// Tensor names, sorted.
  std::vector<std::string> keys() const;
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  size_t size() const { return header_.tensors.size(); }
  /// Dtype, shape and byte range of `name`; throws concord::Error naming the file if absent.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  /// The tensor `name` on the CPU. Zero-copy (it views the mapping) when the data's address is
  /// a multiple of the element size, else a copy; either way it is writable, and writing never
  /// changes the file (the mapping is private, copy-on-write). Throws concord::Error
  /// "unsupported dtype X for tensor Y" for a dtype LibTorch 1.13 lacks.
  at::Tensor get(const std::string& name) const;
  /// True when get(name) returns a view of the mapping rather than a copy.
  bool is_zero_copy(const std::string& name) const;
  /// Copies tensor `name` into `dest` (contiguous, on the CPU, of its dtype and element count)
  /// by reading the file (MappedFile::read), leaving the mapping's pages untouched: how a
  /// loader fills memory of its own (a fused or converted parameter) without a mapped second
  /// copy. Throws concord::Error naming the file and the tensor on a mismatch.
  void read_into(const std::string& name, const at::Tensor& dest) const;
  /// `__metadata__` (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const SafetensorsHeader& header() const { return header_; }
  /// The mapping's bytes (to check where a zero-copy tensor points).
  const uint8_t* mapped_data() const;
  size_t mapped_size() const;

 private:
  std::filesystem::path path_;
  std::shared_ptr<MappedFile> map_;
  bool writable_ = false;  // copy-on-write mapping: zero-copy tensors may be written in place
  SafetensorsHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

/// Every tensor of a safetensors file, zero-copy where aligned (see SafetensorsFile::get).
std::map<std::string, at::Tensor> load_safetensors(const std::filesystem::path& path);

/// The serialised bytes of `tensors`, byte-identical to Python's
/// `safetensors.torch.save(tensors, metadata)` when `metadata` has at most one entry (Python
/// orders several metadata entries by hash, Concord by key). Tensors are made contiguous and
/// moved to the CPU; an empty `metadata` writes no `__metadata__`.
std::string serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

/// Writes serialize_safetensors(tensors, metadata) to `path` through write_file_atomic, without
/// building the whole file in memory.
void save_safetensors(const std::filesystem::path& path,
                      const std::map<std::string, at::Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace concord::io
