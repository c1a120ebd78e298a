#include "concord/core/files.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "concord/core/error.h"

namespace fs = std::filesystem;

namespace concord {

namespace {

std::string errno_text() { return std::strerror(errno); }

fs::path temp_sibling(const fs::path& path) {
  std::random_device rd;
  return path.parent_path() /
         ("." + path.filename().string() + ".tmp-" + std::to_string(getpid()) + "-" +
          std::to_string(rd()));
}

// fsync a file or a folder by path; a folder's fsync makes the rename itself durable.
void fsync_path(const fs::path& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) return;  // best effort for the folder: some filesystems refuse O_DIRECTORY
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_file_atomic(const fs::path& path, const std::function<void(std::ostream&)>& writer) {
  fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail_io(path.string(), "cannot create folder ", parent.string(), ": ", ec.message());
  fs::path tmp = temp_sibling(path.has_parent_path() ? path : fs::path(".") / path);
  try {
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) fail_io(path.string(), "cannot open ", tmp.string(), " for writing");
      writer(out);
      out.flush();
      if (!out) fail_io(path.string(), "write failed (disk full?)");
    }
    fsync_path(tmp, false);
    fs::rename(tmp, path, ec);
    if (ec) fail_io(path.string(), "cannot rename temporary file: ", ec.message());
    fsync_path(parent, true);
  } catch (...) {
    fs::remove(tmp, ec);
    throw;
  }
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  write_file_atomic(path, [&](std::ostream& out) {
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  });
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
