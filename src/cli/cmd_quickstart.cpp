// `concord quickstart [--out DIR] [--quick]`: the pipeline's stages on built-in data, through the
// library's task layer (concord/tasks/quickstart.h).
#include <iostream>

#include "commands.h"
#include "concord/tasks/quickstart.h"

namespace concord::cli {

int cmd_quickstart(const QuickstartArgs& args) {
  const auto report = tasks::run_quickstart(args.out_dir, args.quick);
  std::cout << "report: " << report.string() << "\n";
  return 0;
}

}  // namespace concord::cli
