// `concord run RUN_CONFIG [--set k=v]... [--out DIR] [--resume]`: the task a run config names,
// through the library's task layer (concord/tasks/tasks.h).
#include <iostream>

#include "commands.h"
#include "concord/tasks/tasks.h"

namespace concord::cli {

int cmd_run(const RunArgs& args) {
  const std::string dir =
      tasks::run_task(args.run_config, args.overrides, args.out_dir, args.resume);
  std::cout << "run folder: " << dir << "\n";
  return 0;
}

}  // namespace concord::cli
