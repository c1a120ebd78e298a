// Durable renames: a file renamed into a folder survives a crash only once the folder itself is
// fsynced. write_file_atomic (files.h) does it for the files it writes; checkpoints, which
// rename whole folders into place, call it themselves.
#pragma once
#include <filesystem>
#include <string>

namespace concord {

/// fsyncs the folder `dir`. Filesystems that cannot (EINVAL, EROFS, a folder that cannot be
/// opened) are skipped; a real I/O error throws IoError naming `for_path` (default: `dir`).
void sync_folder(const std::filesystem::path& dir, const std::string& for_path = "");

}  // namespace concord
