#include "commands.h"
#include "concord/core/error.h"
namespace concord::cli {
int cmd_params(const ParamsArgs&) { fail("params: not yet available"); }
int cmd_run(const RunArgs&) { fail("run: not yet available"); }
int cmd_tumlu_score(const TumluScoreArgs&) { fail("tumlu-score: not yet available"); }
int cmd_quickstart(const QuickstartArgs&) { fail("quickstart: not yet available"); }
}
