#include <filesystem>

#include "commands.h"
#include "concord/core/error.h"

namespace concord::cli {

int cmd_tumlu_score(const TumluScoreArgs& args) {
  CONCORD_CHECK(std::filesystem::is_directory(args.outputs_dir), args.outputs_dir,
                ": not a folder");
  CONCORD_CHECK(args.extractor == "official" || args.extractor == "robust",
                "--extractor: expected official or robust, got '", args.extractor, "'");
  fail("tumlu-score: not available in this build yet: it needs the evaluation layer (eval)");
}

}  // namespace concord::cli
