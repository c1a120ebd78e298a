#include "commands.h"
#include "concord/core/config.h"
#include "concord/core/error.h"

namespace concord::cli {

int cmd_params(const ParamsArgs& args) {
  // Read the file first so a missing or malformed config is reported as such.
  load_json_file(args.model_config);
  fail("params: not available in this build yet: counting parameters needs the model layer "
       "(nn, lm), which is not built");
}

}  // namespace concord::cli
