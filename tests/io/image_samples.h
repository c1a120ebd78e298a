// Images the io tests draw and read back (test_image, test_contact_sheet).
#pragma once
#include <array>
#include <cstdint>
#include <random>

#include "concord/io/image.h"

namespace concord::testing {

/// width x height x channels bytes drawn from mt19937(seed).
inline io::Image random_image(int64_t width, int64_t height, int channels, uint32_t seed) {
  std::mt19937 rng(seed);
  io::Image im;
  im.width = width;
  im.height = height;
  im.channels = channels;
  im.pixels.resize(static_cast<size_t>(width * height * channels));
  for (auto& p : im.pixels) p = static_cast<uint8_t>(rng() & 0xFF);
  return im;
}

/// The first three channels of pixel (x, y).
inline std::array<uint8_t, 3> pixel(const io::Image& im, int64_t x, int64_t y) {
  const uint8_t* p = im.pixels.data() + (y * im.width + x) * im.channels;
  return {p[0], p[1], p[2]};
}

}  // namespace concord::testing
