// Fault injection for tests of what happens when writes fail: a file-size limit stands in for a
// full disk (the same short writes, then EFBIG instead of ENOSPC) without a tmpfs to mount.
#pragma once
#include <sys/resource.h>

#include <csignal>

namespace concord::testing {

/// While alive, no regular file of this process may grow past `bytes` (RLIMIT_FSIZE, soft
/// limit) and a write past it fails with EFBIG instead of raising SIGXFSZ, whose default action
/// would kill the test. Restores the limit and the signal disposition on destruction. Keep the
/// scope to the write under test: gtest's own output to a file would be limited too.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &limit) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;
  /// False when the limit could not be set (the test should fail, not pass vacuously).
  bool ok() const { return ok_; }

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = SIG_DFL;
  bool ok_ = false;
};

}  // namespace concord::testing
