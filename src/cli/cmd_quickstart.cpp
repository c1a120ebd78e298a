#include <iostream>

#include "commands.h"
#include "quickstart.h"

namespace concord::cli {

int cmd_quickstart(const QuickstartArgs& args) {
  const auto report = run_quickstart(args.out_dir, args.quick);
  std::cout << "report: " << report.string() << "\n";
  return 0;
}

}  // namespace concord::cli
