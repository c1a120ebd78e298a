#include <iostream>

#include "commands.h"
#include "tasks.h"

namespace concord::cli {

int cmd_run(const RunArgs& args) {
  const std::string dir = run_task(args.run_config, args.overrides, args.out_dir, args.resume);
  std::cout << "run folder: " << dir << "\n";
  return 0;
}

}  // namespace concord::cli
