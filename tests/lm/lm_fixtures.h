// The LM fixtures (made by scripts/fixtures/make_lm_fixtures.py): transformers' outputs on tiny
// random models.
#pragma once
#include <map>
#include <string>

#include "concord/io/safetensors.h"
#include "test_support.h"

namespace concord::testing {

/// tests/fixtures/lm/<name>/reference.safetensors: inputs and transformers' outputs.
inline std::map<std::string, at::Tensor> lm_reference(const std::string& name) {
  return io::load_safetensors(fixture("lm/" + name + "/reference.safetensors"));
}

}  // namespace concord::testing
