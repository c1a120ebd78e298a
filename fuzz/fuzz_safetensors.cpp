// libFuzzer target for the safetensors reader: parses arbitrary bytes as a whole safetensors
// file and copies out every tensor. Bad input must end in concord::Error (FormatError for a
// malformed file, Error for a dtype LibTorch lacks); a crash, a sanitizer report, a hang or an
// allocation beyond the input's size is a bug. Seeds: fuzz/corpus/safetensors (written by
// scripts/fixtures/make_safetensors_fixtures.py).
//
// Standalone build (what CMake's CONCORD_BUILD_FUZZERS does with clang):
//   clang++-14 -std=c++17 -O1 -g -fsanitize=fuzzer,address -I include
//     -isystem /usr/include/torch/csrc/api/include fuzz/fuzz_safetensors.cpp
//     src/io/safetensors.cpp src/core/files.cpp src/core/error.cpp -ltorch -ltorch_cpu -lc10
//   ./a.out -max_total_time=60 fuzz/corpus/safetensors
#include <cstddef>
#include <cstdint>

#include "concord/core/error.h"
#include "concord/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto tensors = concord::io::load_safetensors_from_memory(data, size, "<fuzz>");
    // Touch every element so a tensor whose shape and bytes disagree would show up under ASan.
    for (auto& entry : tensors) {
      if (entry.second.numel() > 0) (void)entry.second.sum();
    }
  } catch (const concord::Error&) {
  }
  return 0;
}
