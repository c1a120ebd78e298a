// Fixture folders of the diffusion tests (made by scripts/fixtures/make_sdxl_pipeline_fixtures.py).
#pragma once
#include <filesystem>

#include "test_support.h"

namespace concord::testing {

/// The tiny SDXL pipeline: model_index.json, scheduler/, unet/, vae/, text_encoder*/, tokenizer*/.
inline std::filesystem::path tiny_sdxl_pipeline_dir() {
  return fixture("diffusion") / "tiny-sdxl-pipeline";
}

}  // namespace concord::testing
