#include "concord/core/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <ostream>
#include <random>
#include <sstream>
#include <streambuf>
#include <vector>

#include "concord/core/error.h"
#include "concord/core/sync_folder.h"

namespace fs = std::filesystem;

namespace concord {

namespace {

std::string errno_text(int err = errno) {
  std::string text = std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) text += " (disk full?)";
  return text;
}

fs::path temp_sibling(const fs::path& path) {
  std::random_device rd;
  return path.parent_path() /
         ("." + path.filename().string() + ".tmp-" + std::to_string(getpid()) + "-" +
          std::to_string(rd()));
}

// write(2) of all `n` bytes, retried on EINTR and short writes; false with errno set on failure
// (a short write that makes no progress is ENOSPC, as POSIX leaves it to the caller).
bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (w == 0) {
      errno = ENOSPC;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// A buffered std::streambuf over a file descriptor that remembers the first write error, so
// write_file_atomic can name it (std::ofstream reports only "failed", and its close() and the
// fsync that follows are where a full disk often shows).
class FdStreambuf final : public std::streambuf {
 public:
  explicit FdStreambuf(int fd) : fd_(fd), buffer_(size_t{1} << 16) { reset(); }
  int error() const { return error_; }
  bool flush_all() { return drain(); }

 protected:
  int_type overflow(int_type ch) override {
    if (!drain()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    // Large blocks (tensor payloads) go straight to the file, without a copy into the buffer.
    if (n >= static_cast<std::streamsize>(buffer_.size())) {
      if (!drain() || !put(s, static_cast<size_t>(n))) return 0;
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }
  int sync() override { return drain() ? 0 : -1; }

 private:
  void reset() { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  bool put(const char* p, size_t n) {
    if (error_ != 0) return false;
    if (!write_all(fd_, p, n)) {
      error_ = errno;
      return false;
    }
    return true;
  }
  bool drain() {
    const auto n = static_cast<size_t>(pptr() - pbase());
    const bool ok = n == 0 || put(pbase(), n);
    reset();
    return ok && error_ == 0;
  }

  int fd_;
  std::vector<char> buffer_;
  int error_ = 0;
};

// fsync a folder, which makes a rename in it durable. Filesystems that cannot fsync a folder
// (EINVAL) or open one for reading are skipped; a real I/O error is reported.
void fsync_directory(const fs::path& dir, const std::string& for_path) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL && err != EROFS) {
    fail_io(for_path, "cannot sync folder ", dir.string(), ": ", errno_text(err));
  }
}

}  // namespace

void write_file_atomic(const fs::path& path, const std::function<void(std::ostream&)>& writer) {
  const fs::path target = path.has_parent_path() ? path : fs::path(".") / path;
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail_io(path.string(), "cannot create folder ", parent.string(), ": ", ec.message());
  const fs::path tmp = temp_sibling(target);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) fail_io(path.string(), "cannot write in ", parent.string(), ": ", errno_text());
  bool fd_open = true;
  try {
    FdStreambuf buf(fd);
    std::ostream out(&buf);
    writer(out);
    out.flush();
    if (!buf.flush_all() || !out) {
      fail_io(path.string(), "write failed: ", errno_text(buf.error() ? buf.error() : EIO));
    }
    // The data must be on disk before the rename makes it the file: else a crash could leave
    // the new name on an empty or partial file.
    if (::fsync(fd) != 0) fail_io(path.string(), "write failed (fsync): ", errno_text());
    fd_open = false;
    if (::close(fd) != 0) fail_io(path.string(), "write failed (close): ", errno_text());
    fs::rename(tmp, target, ec);
    if (ec) fail_io(path.string(), "cannot rename the temporary file into place: ", ec.message());
    fsync_directory(parent, path.string());
  } catch (...) {
    if (fd_open) ::close(fd);
    fs::remove(tmp, ec);
    throw;
  }
}

void sync_folder(const fs::path& dir, const std::string& for_path) {
  fsync_directory(dir, for_path.empty() ? dir.string() : for_path);
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  write_file_atomic(path, [&](std::ostream& out) {
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  });
}

fs::path path_inside(const fs::path& base, const std::string& relative, const std::string& what) {
  const fs::path rel(relative);
  if (relative.empty()) fail_config(what, "an empty path is not a file name");
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory()) {
    fail_config(what, "'", relative, "' is an absolute path; give a path relative to ",
                base.string());
  }
  for (const auto& part : rel) {
    if (part == "..") {
      fail_config(what, "'", relative, "' has a '..' component; it must stay inside ",
                  base.string());
    }
  }
  return base / rel;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io(path.string(), "cannot open for reading");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) fail_io(path.string(), "read failed");
  return buf.str();
}

MappedFile::MappedFile(const fs::path& path, Mode mode) : path_(path), mode_(mode) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail_io(path.string(), "cannot open: ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail_io(path.string(), "cannot stat: ", errno_text());
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail_io(path.string(), "not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  device_ = static_cast<uint64_t>(st.st_dev);
  inode_ = static_cast<uint64_t>(st.st_ino);
  mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (size_ > 0) {
    const int prot = mode == Mode::CopyOnWrite ? (PROT_READ | PROT_WRITE) : PROT_READ;
    void* p = ::mmap(nullptr, size_, prot, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      fail_io(path.string(), "mmap failed: ", errno_text());
    }
    data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void MappedFile::read(uint64_t offset, size_t n, void* dest) const {
  if (offset > size_ || n > size_ - offset) {
    fail(path_.string(), ": read of ", n, " bytes at ", offset, " is past the end (", size_, " bytes)");
  }
  if (n == 0) return;
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  bool same = false;
  if (fd >= 0) {
    struct stat st {};
    same = ::fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_dev) == device_ &&
           static_cast<uint64_t>(st.st_ino) == inode_ && static_cast<size_t>(st.st_size) == size_ &&
           static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec == mtime_ns_;
  }
  if (!same) {
    if (fd >= 0) ::close(fd);
    std::memcpy(dest, data_ + offset, n);
    return;
  }
  auto* out = static_cast<uint8_t*>(dest);
  size_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, out + done, n - done, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const std::string why = got < 0 ? errno_text() : std::string("unexpected end of file");
      ::close(fd);
      fail(path_.string(), ": read failed: ", why);
    }
    done += static_cast<size_t>(got);
  }
  ::close(fd);
}

}  // namespace concord
