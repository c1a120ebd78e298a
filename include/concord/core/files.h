// File helpers. Every file Concord writes goes through write_file_atomic: a crash or a full disk
// leaves either the old file or the new one, never a torn one.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

namespace concord {

/// Writes `contents` to `path` through a temporary file in the same folder, fsync and rename,
/// then fsyncs the folder. Creates missing parent folders. A write that fails (a full disk, a
/// file-size limit, a folder that cannot be written) throws concord::IoError naming `path` and
/// the system's reason, removes the temporary file and leaves `path` as it was.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);

/// As above, with a writer callback that streams into the temporary file. If the callback
/// throws, the temporary file is removed and `path` is untouched.
void write_file_atomic(const std::filesystem::path& path,
                       const std::function<void(std::ostream&)>& writer);

/// `base / relative` for a relative path that comes from a config or from data (a shard prefix,
/// an output or module name): an empty or absolute path, or one with a `..` component, throws
/// concord::ConfigError naming `what` (the config key or the field), so a write through the
/// result cannot land outside `base`.
std::filesystem::path path_inside(const std::filesystem::path& base, const std::string& relative,
                                  const std::string& what);

/// Reads a whole file; the error names the file.
std::string read_file(const std::filesystem::path& path);

/// A memory map of a file (empty files map to size 0, data nullptr).
class MappedFile {
 public:
  enum class Mode {
    ReadOnly,    ///< pages are read-only: a write through data() faults
    CopyOnWrite  ///< pages are writable but private: writes never reach the file (as torch's
                 ///< own loaders map files, so zero-copy tensors support in-place ops)
  };
  explicit MappedFile(const std::filesystem::path& path, Mode mode = Mode::ReadOnly);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  /// Writable view of a CopyOnWrite mapping (nullptr for ReadOnly).
  uint8_t* mutable_data() const { return mode_ == Mode::CopyOnWrite ? data_ : nullptr; }
  Mode mode() const { return mode_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

  /// Copies bytes [offset, offset + n) of the file into `dest` with pread, so the mapping's pages
  /// stay out of this process's resident set (a loader that copies a tensor out of a file
  /// needs no second, mapped copy of it in memory). Reads the mapping instead when the path no
  /// longer names the file that was mapped (replaced or modified since), so the bytes are
  /// always the mapping's. Throws concord::Error naming the file on a range outside it or an
  /// I/O error.
  void read(uint64_t offset, size_t n, void* dest) const;

 private:
  std::filesystem::path path_;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  Mode mode_ = Mode::ReadOnly;
  // Identity of the mapped file (device, inode, modification time), checked by read().
  uint64_t device_ = 0, inode_ = 0;
  int64_t mtime_ns_ = 0;
};

}  // namespace concord
