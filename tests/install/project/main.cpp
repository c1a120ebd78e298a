// Uses the installed package through the umbrella header alone (concord/concord.h, which must
// compile on its own): a config schema, a tensor through LibTorch, the logging header (spdlog +
// fmt), a tokenizer, the version header, and the tasks layer (the top library of
// concord::concord).
#include <iostream>

#include "concord/concord.h"

int main() {
  concord::ConfigSchema schema;
  schema.optional("steps", concord::ConfigType::Int, 3, "steps");
  auto resolved = schema.resolve(concord::Json::object(), "inline");
  concord::text::ByteTokenizer tok;
  auto ids = tok.encode("ok");
  at::Tensor t = at::ones({resolved["steps"].get<int64_t>()});
  if (t.sum().item<double>() != 3.0 || tok.decode(ids) != "ok") return 1;
  if (concord::process_world_size() < 1) return 1;
  if (!concord::tasks::task_registry().contains("tokenize")) return 1;
  std::cout << "concord " << CONCORD_VERSION_STRING << " ok\n";
  return 0;
}
