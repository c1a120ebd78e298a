#include "concord/nn/init.h"

namespace concord::nn {

namespace {
thread_local bool skip_init = false;
}  // namespace

bool skip_init_enabled() { return skip_init; }

SkipInitGuard::SkipInitGuard() : previous_(skip_init) { skip_init = true; }

SkipInitGuard::~SkipInitGuard() { skip_init = previous_; }

}  // namespace concord::nn
