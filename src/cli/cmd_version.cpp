#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <iostream>

#include "commands.h"
#include "concord/core/version.h"

namespace concord::cli {

int cmd_version() {
  std::cout << "concord " << CONCORD_VERSION_STRING << "\n"
            << "libtorch " << TORCH_VERSION << "\n"
            << "threads " << at::get_num_threads() << "\n"
            << "cuda " << (torch::cuda::is_available() ? "available" : "not available") << "\n";
  return 0;
}

}  // namespace concord::cli
