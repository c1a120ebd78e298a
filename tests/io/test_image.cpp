// Tests of the image reader and writer (libpng, libjpeg-turbo).
// Reference pixels come from PIL: tests/fixtures/images/expected.json holds what
// Image.open(f).convert("RGB") gives for each tiny file there (scripts/fixtures/
// make_image_fixtures.py), so every colour model must decode to PIL's bytes exactly. Bad files
// are made here by cutting and patching the fixtures: every one must be a FormatError naming
// the file. YCCK JPEGs, which Pillow cannot write, are written here through libjpeg.
#include <gtest/gtest.h>

#include <cstdio>
// clang-format off
#include <jpeglib.h>
// clang-format on

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>

#include <nlohmann/json.hpp>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/io/image.h"
#include "image_samples.h"
#include "test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace concord::io;
using concord::testing::fixture;
using concord::testing::pixel;
using concord::testing::random_image;
using concord::testing::TempDir;

namespace {

fs::path image_fixture(const std::string& name) { return fixture("images/" + name); }

const json& image_expected() {
  static const json j = json::parse(concord::read_file(image_fixture("expected.json")));
  return j;
}

std::string fixture_bytes(const std::string& name) {
  return concord::read_file(image_fixture(name));
}

// Runs `f`, which must throw concord::FormatError whose message names `name` and contains
// `fragment`.
void expect_format_error(const std::function<void()>& f, const std::string& name,
                         const std::string& fragment, const std::string& what) {
  try {
    f();
    ADD_FAILURE() << what << ": no error";
  } catch (const concord::FormatError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(name), std::string::npos) << what << ": " << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << what << ": " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": not a FormatError: " << e.what();
  }
}

uint32_t crc32(const std::string& bytes) {  // PNG's CRC (ISO 3309), to patch chunks
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : bytes) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

std::string png_chunk(const std::string& type, const std::string& data) {
  return be32(static_cast<uint32_t>(data.size())) + type + data + be32(crc32(type + data));
}

const std::string kPngSignature("\x89PNG\r\n\x1a\n", 8);

// A PNG that stops after its IHDR and the start of an IDAT: enough for the header checks.
std::string png_header_only(uint32_t width, uint32_t height) {
  const std::string ihdr = be32(width) + be32(height) + std::string("\x08\x02\x00\x00\x00", 5);
  return kPngSignature + png_chunk("IHDR", ihdr) + png_chunk("IDAT", std::string("\x78\x9c", 2)) +
         png_chunk("IEND", "");
}

// A four-component JPEG (quality 100, no subsampling) through libjpeg, stored as given
// (`stored` is Adobe polarity, 255 - ink), with the colour transform `space` (CMYK or YCCK).
std::string encode_cmyk_jpeg(int width, int height, const std::vector<uint8_t>& stored,
                             J_COLOR_SPACE space) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buffer, &size);
  c.image_width = width;
  c.image_height = height;
  c.input_components = 4;
  c.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_colorspace(&c, space);
  jpeg_set_quality(&c, 100, TRUE);
  for (int i = 0; i < c.num_components; ++i) {
    c.comp_info[i].h_samp_factor = 1;
    c.comp_info[i].v_samp_factor = 1;
  }
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(stored.data()) + size_t{c.next_scanline} * width * 4;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::string out(reinterpret_cast<const char*>(buffer), size);
  jpeg_destroy_compress(&c);
  std::free(buffer);
  return out;
}

}  // namespace

// ---- reading and writing --------------------------------------------------------------------

TEST(Image, PngWriteThenReadIsExact) {
  TempDir dir;
  const Image rgb = random_image(7, 5, 3, 1);
  const fs::path path = dir / "out.png";
  write_png(path, rgb);
  const Image back = read_image(path);
  EXPECT_EQ(back.width, 7);
  EXPECT_EQ(back.height, 5);
  EXPECT_EQ(back.channels, 3);
  EXPECT_EQ(back.pixels, rgb.pixels);
  EXPECT_EQ(back.source_format, ImageFormat::png);
  EXPECT_EQ(back.source_model, ColorModel::rgb);
  EXPECT_EQ(back.source_bit_depth, 8);
  EXPECT_EQ(describe_source(back), "rgb 8-bit PNG");

  // Overwriting replaces the file and leaves no temporary file behind.
  const Image other = random_image(3, 9, 3, 2);
  write_png(path, other);
  EXPECT_EQ(read_image(path).pixels, other.pixels);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "out.png");
  }
  EXPECT_EQ(entries, 1);
  // encode_png is what write_png writes.
  EXPECT_EQ(concord::read_file(path), encode_png(other));
}

TEST(Image, PngWriteOfGreyAndRgbaReadsBackAsRgbWithItsModel) {
  const Image grey = random_image(4, 3, 1, 3);
  const Image g = decode_image(encode_png(grey), "grey");
  EXPECT_EQ(g.source_model, ColorModel::grey);
  ASSERT_EQ(g.pixels.size(), grey.pixels.size() * 3);
  for (size_t i = 0; i < grey.pixels.size(); ++i) {
    for (int c = 0; c < 3; ++c) ASSERT_EQ(g.pixels[3 * i + c], grey.pixels[i]) << i;
  }

  const Image rgba = random_image(4, 3, 4, 4);
  const Image a = decode_image(encode_png(rgba), "rgba");
  EXPECT_EQ(a.source_model, ColorModel::rgba);
  ASSERT_EQ(a.pixels.size(), 4u * 3 * 3);
  for (size_t i = 0; i < 12; ++i) {  // alpha discarded, colour untouched (no compositing)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(a.pixels[3 * i + c], rgba.pixels[4 * i + c]) << i;
  }
}

TEST(Image, EveryColourModelDecodesToPilsPixels) {
  int files = 0;
  for (const auto& [name, want] : image_expected().items()) {
    SCOPED_TRACE(name);
    const Image im = read_image(image_fixture(name));
    ++files;
    EXPECT_EQ(image_format_name(im.source_format), want["format"].get<std::string>());
    EXPECT_EQ(color_model_name(im.source_model), want["model"].get<std::string>());
    EXPECT_EQ(im.source_bit_depth, want["bit_depth"].get<int>());
    EXPECT_EQ(im.width, want["width"].get<int64_t>());
    EXPECT_EQ(im.height, want["height"].get<int64_t>());
    EXPECT_EQ(im.channels, 3);
    const auto rgb = want["rgb"].get<std::vector<int>>();
    ASSERT_EQ(im.pixels.size(), rgb.size());
    int wrong = 0, first = -1;
    for (size_t i = 0; i < rgb.size(); ++i) {
      if (im.pixels[i] != rgb[i]) {
        if (first < 0) first = static_cast<int>(i);
        ++wrong;
      }
    }
    EXPECT_EQ(wrong, 0) << "first difference at byte " << first << ": "
                        << (first >= 0 ? int(im.pixels[first]) : 0) << " vs "
                        << (first >= 0 ? rgb[first] : 0);
  }
  // rgb, rgba, grey (1, 8, 16 bit), grey_alpha, palette, rgb16, interlaced; 4 JPEGs
  EXPECT_EQ(files, 13);
}

TEST(Image, FormatComesFromTheBytesNotTheName) {
  TempDir dir;
  const fs::path path = concord::testing::write_file(dir / "photo.png", fixture_bytes("grey.jpg"));
  const Image im = read_image(path);
  EXPECT_EQ(im.source_format, ImageFormat::jpeg);
  EXPECT_EQ(im.source_model, ColorModel::grey);
  EXPECT_EQ(describe_source(im), "grey 8-bit JPEG");
  EXPECT_EQ(detect_image_format(reinterpret_cast<const uint8_t*>("\xFF\xD8\xFF"), 3),
            ImageFormat::jpeg);
  EXPECT_EQ(detect_image_format(reinterpret_cast<const uint8_t*>("\xFF\xD8"), 2), ImageFormat::none);
}

TEST(Image, CmykAndYcckJpegsConvertAsPil) {
  // Four flat 8x8 blocks of known ink; libjpeg stores 255 - ink (Adobe polarity).
  const std::vector<std::array<uint8_t, 4>> inks = {
      {0, 255, 255, 0}, {255, 0, 255, 0}, {30, 60, 90, 120}, {0, 0, 0, 255}};
  const int w = 16, h = 16;
  std::vector<uint8_t> stored(w * h * 4);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const auto& ink = inks[(y / 8) * 2 + x / 8];
      for (int c = 0; c < 4; ++c) stored[(y * w + x) * 4 + c] = static_cast<uint8_t>(255 - ink[c]);
    }
  }
  // PIL's cmyk2rgb on true ink.
  auto pil = [](int c, int k) {
    const int nk = 255 - k, t = c * nk + 128;
    return std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255);
  };
  for (const auto& [space, model] : {std::pair{JCS_CMYK, ColorModel::cmyk},
                                     std::pair{JCS_YCCK, ColorModel::ycck}}) {
    const Image im = decode_image(encode_cmyk_jpeg(w, h, stored, space), "cmyk.jpg");
    SCOPED_TRACE(color_model_name(model));
    EXPECT_EQ(im.source_model, model);
    EXPECT_EQ(im.source_bit_depth, 8);
    for (int b = 0; b < 4; ++b) {
      const auto& ink = inks[b];
      const auto px = pixel(im, (b % 2) * 8 + 4, (b / 2) * 8 + 4);
      for (int c = 0; c < 3; ++c) {
        // Quality 100 on flat blocks: within JPEG's (and YCCK's colour transform's) rounding.
        EXPECT_NEAR(px[c], pil(ink[c], ink[3]), 2) << "block " << b << " channel " << c;
      }
    }
  }
  // Red ink (M + Y) is red, black ink is black: the polarity is the right way round.
  const Image cmyk = decode_image(encode_cmyk_jpeg(w, h, stored, JCS_CMYK), "cmyk.jpg");
  EXPECT_GT(pixel(cmyk, 4, 4)[0], 250);
  EXPECT_LT(pixel(cmyk, 4, 4)[1], 5);
  EXPECT_LT(pixel(cmyk, 12, 12)[0], 5);
}

// ---- bad input ------------------------------------------------------------------------------

TEST(Image, UnreadableAndNonImageFilesAreNamedErrors) {
  TempDir dir;
  const fs::path missing = dir / "missing.png";
  try {
    read_image(missing);
    ADD_FAILURE() << "no error";
  } catch (const concord::IoError& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_image(dir.path()), concord::IoError);

  const fs::path empty = concord::testing::write_file(dir / "empty.png", "");
  expect_format_error([&] { read_image(empty); }, empty.string(), "empty", "empty file");
  const fs::path text = concord::testing::write_file(dir / "notes.jpg", "hello, world\n");
  expect_format_error([&] { read_image(text); }, text.string(), "not a PNG or JPEG", "text");
  const fs::path gif = concord::testing::write_file(dir / "anim.png", "GIF89a\x01\x00\x01\x00");
  expect_format_error([&] { read_image(gif); }, gif.string(), "GIF", "gif");
}

TEST(Image, EveryTruncationIsAnError) {
  TempDir dir;
  for (const std::string name :
       {"rgb8.png", "interlaced_rgb8.png", "palette2.png", "rgb.jpg", "rgb_progressive.jpg",
        "cmyk.jpg"}) {
    const std::string bytes = fixture_bytes(name);
    for (size_t cut = 1; cut < bytes.size(); ++cut) {
      expect_format_error([&] { decode_image(bytes.substr(0, cut), name); }, name, "",
                          name + " cut at " + std::to_string(cut));
    }
  }
  // Through a file: the message names the path and says why.
  const std::string png = fixture_bytes("rgb8.png");
  const fs::path cut_png = concord::testing::write_file(dir / "cut.png", png.substr(0, png.size() / 2));
  expect_format_error([&] { read_image(cut_png); }, cut_png.string(), "truncated", "png");
  const std::string jpg = fixture_bytes("rgb.jpg");
  const fs::path cut_jpg = concord::testing::write_file(dir / "cut.jpg", jpg.substr(0, jpg.size() - 40));
  expect_format_error([&] { read_image(cut_jpg); }, cut_jpg.string(), "truncated", "jpeg");
}

TEST(Image, CorruptFilesAreErrors) {
  const std::string png = fixture_bytes("rgb8.png");
  const size_t idat = png.find("IDAT");
  ASSERT_NE(idat, std::string::npos);

  // A flipped bit in the header without fixing its CRC.
  std::string flipped = png;
  flipped[8 + 8 + 3] = static_cast<char>(flipped[8 + 8 + 3] ^ 0x01);  // width 5 -> 4
  expect_format_error([&] { decode_image(flipped, "flipped.png"); }, "flipped.png",
                      "IHDR: CRC error", "crc");
  // A flipped byte in the compressed pixels: zlib fails before libpng reaches the CRC.
  std::string deflate = png;
  deflate[idat + 6] = static_cast<char>(deflate[idat + 6] ^ 0x55);
  expect_format_error([&] { decode_image(deflate, "deflate.png"); }, "deflate.png", "IDAT",
                      "deflate");

  // A broken zlib stream behind a correct CRC.
  std::string zlib = png;
  zlib[idat + 4] = '\x7A';  // zlib header: compression method 10, which does not exist
  const uint32_t length = (uint8_t(zlib[idat - 4]) << 24) | (uint8_t(zlib[idat - 3]) << 16) |
                          (uint8_t(zlib[idat - 2]) << 8) | uint8_t(zlib[idat - 1]);
  zlib.replace(idat + 4 + length, 4, be32(crc32(zlib.substr(idat, 4 + length))));
  expect_format_error([&] { decode_image(zlib, "zlib.png"); }, "zlib.png", "PNG", "zlib");

  // A JPEG whose entropy-coded data runs into a marker: libjpeg would pad with grey.
  std::string jpg = fixture_bytes("rgb.jpg");
  const size_t sos = jpg.find("\xFF\xDA");
  ASSERT_NE(sos, std::string::npos);
  const size_t data = sos + 2 + ((uint8_t(jpg[sos + 2]) << 8) | uint8_t(jpg[sos + 3]));
  jpg[data + 20] = '\xFF';
  jpg[data + 21] = '\xD9';
  expect_format_error([&] { decode_image(jpg, "marker.jpg"); }, "marker.jpg", "Corrupt JPEG",
                      "jpeg");

  // A PNG with a zero width.
  expect_format_error([&] { decode_image(png_header_only(0, 4), "zero.png"); }, "zero.png",
                      "PNG", "zero width");
}

TEST(Image, SizesOverTheLimitsAreRefusedBeforeDecoding) {
  // Headers that claim huge images (and carry no pixels): refused by size, not by truncation.
  expect_format_error([&] { decode_image(png_header_only(20000, 1), "wide.png"); }, "wide.png",
                      "max_side", "png side");
  expect_format_error([&] { decode_image(png_header_only(16384, 16385), "tall.png"); },
                      "tall.png", "max_side", "png side");
  ImageLimits small;
  small.max_pixels = 19;
  expect_format_error([&] { decode_image(fixture_bytes("rgb8.png"), "rgb8.png", small); },
                      "rgb8.png", "max_pixels", "png pixels");
  small = ImageLimits{};
  small.max_side = 4;
  expect_format_error([&] { decode_image(fixture_bytes("rgb8.png"), "rgb8.png", small); },
                      "rgb8.png", "max_side", "png side limit");
  EXPECT_EQ(decode_image(fixture_bytes("grey8.png"), "grey8.png", small).width, 4);

  std::string jpg = fixture_bytes("rgb.jpg");
  const size_t sof = jpg.find("\xFF\xC0");
  ASSERT_NE(sof, std::string::npos);
  jpg[sof + 7] = '\x4E';  // width 0x4E20 = 20000
  jpg[sof + 8] = '\x20';
  expect_format_error([&] { decode_image(jpg, "wide.jpg"); }, "wide.jpg", "max_side", "jpeg");

  ImageLimits scans;
  scans.max_jpeg_scans = 2;
  expect_format_error(
      [&] { decode_image(fixture_bytes("rgb_progressive.jpg"), "prog.jpg", scans); }, "prog.jpg",
      "max_jpeg_scans", "scans");
  EXPECT_EQ(decode_image(fixture_bytes("rgb_progressive.jpg"), "prog.jpg").width, 16);
  EXPECT_THROW(decode_image(fixture_bytes("rgb8.png"), "x", ImageLimits{0, 1, 1}), concord::Error);
}

// ---- tensors --------------------------------------------------------------------------------

TEST(Image, TensorLayoutAndValues) {
  const Image im = random_image(5, 3, 3, 7);
  const at::Tensor t = image_to_tensor(im);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 3, 5}));
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  const auto a = t.accessor<float, 3>();
  for (int64_t y = 0; y < 3; ++y) {
    for (int64_t x = 0; x < 5; ++x) {
      for (int c = 0; c < 3; ++c) {
        ASSERT_EQ(a[c][y][x], static_cast<float>(im.pixels[(y * 5 + x) * 3 + c]) / 255.0f);
      }
    }
  }
}

TEST(Image, TensorToImageClampsAndRoundsHalfToEvenAsDiffusers) {
  // Values chosen so x * 255 in float32 is exactly k + 0.5 (numpy: np.round gives the even k).
  const float half_1 = static_cast<float>(1.5 / 255), half_2 = static_cast<float>(2.5 / 255),
              half_3 = static_cast<float>(3.5 / 255);
  ASSERT_EQ(half_1 * 255.0f, 1.5f);
  ASSERT_EQ(half_2 * 255.0f, 2.5f);
  ASSERT_EQ(half_3 * 255.0f, 3.5f);
  const std::vector<float> in = {-0.5f, 0.0f, half_1, half_2, half_3, 0.25f, 0.5f, 1.0f, 1.7f};
  const std::vector<uint8_t> want = {0, 0, 2, 2, 4, 64, 128, 255, 255};
  const at::Tensor t = at::tensor(in).reshape({1, 1, 9}).expand({3, 1, 9}).contiguous();
  const Image im = tensor_to_image(t);
  EXPECT_EQ(im.channels, 3);
  EXPECT_EQ(im.width, 9);
  EXPECT_EQ(im.height, 1);
  for (size_t i = 0; i < want.size(); ++i) {
    for (int c = 0; c < 3; ++c) EXPECT_EQ(im.pixels[3 * i + c], want[i]) << in[i];
  }
  // double and bfloat16 go through float32 first, as diffusers' .float().
  EXPECT_EQ(tensor_to_image(t.to(at::kDouble)).pixels, im.pixels);
  EXPECT_EQ(tensor_to_image(at::full({3, 2, 2}, 0.5, at::kBFloat16)).pixels,
            std::vector<uint8_t>(12, 128));
}

TEST(Image, TensorRoundTripIsExactForEveryByte) {
  Image im;
  im.width = 256;
  im.height = 1;
  im.channels = 1;
  for (int v = 0; v < 256; ++v) im.pixels.push_back(static_cast<uint8_t>(v));
  EXPECT_EQ(tensor_to_image(image_to_tensor(im)).pixels, im.pixels);
  const Image rgb = random_image(6, 4, 3, 9);
  const Image back = tensor_to_image(image_to_tensor(rgb));
  EXPECT_EQ(back.pixels, rgb.pixels);
  EXPECT_EQ(back.width, 6);
  EXPECT_EQ(back.height, 4);
}

TEST(Image, TensorToImageRefusesWhatIsNotAnImage) {
  EXPECT_THROW(tensor_to_image(at::zeros({4, 4, 3, 1})), concord::Error);
  EXPECT_THROW(tensor_to_image(at::zeros({2, 4, 3})), concord::Error);  // [H, W, C]: C first
  EXPECT_THROW(tensor_to_image(at::zeros({5, 4, 4})), concord::Error);
  EXPECT_THROW(tensor_to_image(at::zeros({3, 0, 4})), concord::Error);
  EXPECT_THROW(tensor_to_image(at::zeros({3, 4, 4}, at::kByte)), concord::Error);
  at::Tensor nan = at::zeros({3, 2, 2});
  nan[1][0][1] = NAN;
  try {
    tensor_to_image(nan);
    ADD_FAILURE() << "no error";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
  Image bad = random_image(2, 2, 3, 1);
  bad.pixels.pop_back();
  EXPECT_THROW(image_to_tensor(bad), concord::Error);
  EXPECT_THROW(encode_png(bad), concord::Error);
}
