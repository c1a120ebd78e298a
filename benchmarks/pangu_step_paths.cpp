// bench_pangu_step's default config lives in the source tree. The tree's path is compiled into
// this small file alone: in bench_pangu_step.cpp it would make that compile miss ccache in every
// other clone of the repository.
#include <string>

namespace concord::bench {

std::string source_tree() { return CONCORD_SOURCE_DIR; }

}  // namespace concord::bench
