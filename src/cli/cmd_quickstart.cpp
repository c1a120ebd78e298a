// `concord quickstart [--out DIR] [--quick | --smoke]`: the pipeline's stages on built-in data, through the
// library's task layer (concord/tasks/quickstart.h).
#include <iostream>

#include "commands.h"
#include "concord/tasks/quickstart.h"

namespace concord::cli {

int cmd_quickstart(const QuickstartArgs& args) {
  const auto size = args.smoke   ? tasks::QuickstartSize::smoke
                    : args.quick ? tasks::QuickstartSize::quick
                                 : tasks::QuickstartSize::full;
  const auto result = tasks::run_quickstart(args.out_dir, size);
  std::cout << "\n" << result.summary;
  std::cout << "report: " << result.report.string() << "\n";
  return 0;
}

}  // namespace concord::cli
