// libFuzzer target for the image decoder (concord/io/image.h): decodes arbitrary bytes as a PNG
// or JPEG under small limits, then checks that what came out is a consistent RGB image that
// survives a PNG round trip unchanged. Bad input must end in concord::FormatError; a crash, a
// sanitizer report, a leak (a longjmp out of libpng or libjpeg that skipped a free), a hang or
// an allocation beyond the limits is a bug. Seeds: fuzz/corpus/image (copied from
// tests/fixtures/images by scripts/fixtures/make_image_fixtures.py); dictionary: image.dict.
//
// PNG chunks carry a CRC, so nearly every mutation of a PNG would die at the first CRC check;
// the target rewrites the CRC of every complete chunk first (zlib's crc32) so the mutations
// reach libpng's chunk parsers, zlib and the row transforms. The library itself keeps checking
// CRCs.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "concord/core/error.h"
#include "concord/io/image.h"

namespace {

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void fix_png_crcs(std::string& bytes) {
  size_t pos = 8;
  while (pos + 12 <= bytes.size()) {
    auto* p = reinterpret_cast<uint8_t*>(&bytes[pos]);
    const uint32_t length = read_be32(p);
    if (length > bytes.size() - pos - 12) break;
    const uLong crc = crc32(0L, p + 4, 4 + length);
    for (int i = 0; i < 4; ++i) p[8 + length + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
    pos += 12 + length;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (concord::io::detect_image_format(data, size) == concord::io::ImageFormat::png) {
    fix_png_crcs(bytes);
  }
  concord::io::ImageLimits limits;
  limits.max_side = 4096;
  limits.max_pixels = int64_t{1} << 22;  // 12 MiB of RGB
  limits.max_jpeg_scans = 64;
  concord::io::Image image;
  try {
    image = concord::io::decode_image(bytes, "<fuzz>", limits);
  } catch (const concord::FormatError&) {
    return 0;
  }
  // Anything decoded is a whole RGB image within the limits...
  if (image.channels != 3 || image.width <= 0 || image.height <= 0 ||
      image.width > limits.max_side || image.height > limits.max_side ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * 3)) {
    std::abort();
  }
  // ...and encodes and decodes back to the same pixels (ASan sees every byte read).
  const concord::io::Image back = concord::io::decode_image(concord::io::encode_png(image), "<png>");
  if (back.pixels != image.pixels || back.source_model != concord::io::ColorModel::rgb) std::abort();
  return 0;
}
