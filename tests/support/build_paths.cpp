// The folders the tests were configured with, compiled into this one small file: a path in the
// preprocessed code makes a compile miss ccache in every other clone of the repository, so it
// stays out of test_support.cpp's unity batch (tests/CMakeLists.txt).
#include <filesystem>

namespace concord::testing::detail {

std::filesystem::path built_source_dir() { return CONCORD_SOURCE_DIR; }
std::filesystem::path built_binary_dir() { return CONCORD_BINARY_DIR; }

}  // namespace concord::testing::detail
