// PNG and JPEG through libpng and libjpeg-turbo (docs in concord/io/image.h).
//
// Both libraries report a fatal error by calling a handler that must not return. Ours copy the
// message into the decoder's state and longjmp back to a setjmp in a small function (png_run,
// jpeg_run) whose only local is the pointer to that state; the work happens in a separate
// function below it (png_body, jpeg_body) whose locals are scalars. So a longjmp only ever
// unwinds C frames and frames without destructors, every object with one (the Image, vectors)
// lives in the state owned by the caller, and the C++ exception is thrown after the jump, by
// the caller, once nothing of the C library is on the stack. No handler throws.
#include "concord/io/image.h"

#include <cstdio>  // jpeglib.h needs FILE and size_t declared before it
// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <png.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <csetjmp>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "concord/core/error.h"
#include "concord/core/files.h"

namespace fs = std::filesystem;

namespace concord::io {

namespace {

constexpr size_t kMessageSize = JMSG_LENGTH_MAX;  // 200: room for either library's messages

// Copies a message into a fixed buffer (no allocation: called between setjmp and longjmp).
void set_message(char* dest, const char* text) {
  std::snprintf(dest, kMessageSize, "%s", text ? text : "unknown error");
}

// Writes the refusal into `message` and returns false when the size is over the limits.
bool within_limits(uint64_t width, uint64_t height, const ImageLimits& limits, char* message) {
  if (width == 0 || height == 0) {
    std::snprintf(message, kMessageSize, "image is %llux%llu pixels, which holds nothing",
                  static_cast<unsigned long long>(width), static_cast<unsigned long long>(height));
    return false;
  }
  const uint64_t side = static_cast<uint64_t>(limits.max_side);
  if (width > side || height > side) {
    std::snprintf(message, kMessageSize,
                  "image is %llux%llu pixels, over the limit of %llu a side (ImageLimits::max_side)",
                  static_cast<unsigned long long>(width), static_cast<unsigned long long>(height),
                  static_cast<unsigned long long>(side));
    return false;
  }
  if (width * height > static_cast<uint64_t>(limits.max_pixels)) {
    std::snprintf(message, kMessageSize,
                  "image is %llux%llu pixels, over the limit of %lld pixels (ImageLimits::max_pixels)",
                  static_cast<unsigned long long>(width), static_cast<unsigned long long>(height),
                  static_cast<long long>(limits.max_pixels));
    return false;
  }
  return true;
}

// ---- PNG reading ---------------------------------------------------------------------------

struct PngDecode {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  ImageLimits limits;
  Image* out = nullptr;
  std::vector<png_bytep> rows;
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::jmp_buf jmp;
  char message[kMessageSize] = {};
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecode*>(png_get_error_ptr(png));
  set_message(d->message, message);
  std::longjmp(d->jmp, 1);
}

// Warnings (a bad CRC in an ancillary chunk, which libpng then skips, ...) change no pixel.
void png_on_warning(png_structp, png_const_charp) {}

// libpng allocates a chunk's declared length before reading it, and the check against its 8 MB
// chunk limit is only a "benign" error (a warning when reading), so a 30-byte file declaring a
// 2 GiB iTXt chunk would allocate 2 GiB. No allocation of libpng's own needs more than a few
// hundred KiB (row buffers, zlib's window) or the 8 MB chunk limit; refusing larger ones makes
// libpng skip such an ancillary chunk (it then runs out of input: truncated) or fail.
constexpr size_t kPngMaxAllocation = size_t{16} << 20;

png_voidp png_allocate(png_structp, png_alloc_size_t size) {
  return size <= kPngMaxAllocation ? std::malloc(size) : nullptr;
}

void png_release(png_structp, png_voidp p) { std::free(p); }

void png_read_bytes(png_structp png, png_bytep dest, size_t n) {
  auto* d = static_cast<PngDecode*>(png_get_io_ptr(png));
  if (n > d->size - d->pos) png_error(png, "file is truncated");
  std::memcpy(dest, d->data + d->pos, n);
  d->pos += n;
}

[[gnu::noinline]] bool png_body(PngDecode* d) {
  d->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, d, png_on_error, png_on_warning,
                                    nullptr, png_allocate, png_release);
  if (d->png == nullptr) {
    set_message(d->message, "cannot create a libpng reader (out of memory?)");
    return false;
  }
  d->info = png_create_info_struct(d->png);
  if (d->info == nullptr) {
    set_message(d->message, "cannot create a libpng info struct (out of memory?)");
    return false;
  }
  png_set_read_fn(d->png, d, png_read_bytes);
  // libpng's own default refuses over 1,000,000 a side; ours (within_limits) say why.
  png_set_user_limits(d->png, 0x7fffffff, 0x7fffffff);
  png_read_info(d->png, d->info);

  png_uint_32 width = 0, height = 0;
  int depth = 0, color = 0, interlace = 0;
  png_get_IHDR(d->png, d->info, &width, &height, &depth, &color, &interlace, nullptr, nullptr);
  if (!within_limits(width, height, d->limits, d->message)) return false;
  Image& out = *d->out;
  out.source_format = ImageFormat::png;
  out.source_bit_depth = depth;
  switch (color) {
    case PNG_COLOR_TYPE_GRAY: out.source_model = ColorModel::grey; break;
    case PNG_COLOR_TYPE_GRAY_ALPHA: out.source_model = ColorModel::grey_alpha; break;
    case PNG_COLOR_TYPE_PALETTE: out.source_model = ColorModel::palette; break;
    case PNG_COLOR_TYPE_RGB: out.source_model = ColorModel::rgb; break;
    case PNG_COLOR_TYPE_RGB_ALPHA: out.source_model = ColorModel::rgba; break;
    default: set_message(d->message, "unknown colour type"); return false;  // libpng checks it
  }

  // Every model to 8-bit RGB, as PIL's convert("RGB"): alpha and tRNS discarded, not composited.
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(d->png);
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(d->png);
  if (depth == 16) png_set_strip_16(d->png);  // the high byte, as PIL's "RGB;16B" unpacker
  if ((color & PNG_COLOR_MASK_ALPHA) != 0 || png_get_valid(d->png, d->info, PNG_INFO_tRNS) != 0) {
    png_set_strip_alpha(d->png);
  }
  if ((color & PNG_COLOR_MASK_COLOR) == 0) png_set_gray_to_rgb(d->png);
  png_set_interlace_handling(d->png);
  png_read_update_info(d->png, d->info);
  if (png_get_channels(d->png, d->info) != 3 || png_get_bit_depth(d->png, d->info) != 8 ||
      png_get_rowbytes(d->png, d->info) != size_t{width} * 3) {
    set_message(d->message, "libpng did not convert the image to 8-bit RGB");  // a bug of ours
    return false;
  }

  out.width = width;
  out.height = height;
  out.channels = 3;
  out.pixels.resize(size_t{width} * height * 3);
  d->rows.resize(height);
  for (size_t y = 0; y < height; ++y) d->rows[y] = out.pixels.data() + y * size_t{width} * 3;
  png_read_image(d->png, d->rows.data());
  png_read_end(d->png, nullptr);  // to IEND: a file cut after its pixel data is truncated too
  return true;
}

bool png_run(PngDecode* d) {
  if (setjmp(d->jmp) != 0) return false;
  return png_body(d);
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name,
                 const ImageLimits& limits) {
  Image out;
  PngDecode d;
  d.data = data;
  d.size = size;
  d.limits = limits;
  d.out = &out;
  struct Release {
    PngDecode& d;
    ~Release() {
      if (d.png != nullptr) png_destroy_read_struct(&d.png, &d.info, nullptr);
    }
  } release{d};
  if (!png_run(&d)) fail_format(name, "PNG: ", d.message);
  return out;
}

// ---- JPEG reading --------------------------------------------------------------------------

struct JpegDecode {
  const uint8_t* data = nullptr;
  size_t size = 0;
  ImageLimits limits;
  Image* out = nullptr;
  std::vector<uint8_t> row;  // one CMYK scanline
  bool created = false;
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_progress_mgr progress;
  std::jmp_buf jmp;
  char message[kMessageSize] = {};
};

void jpeg_on_error_exit(j_common_ptr c) {
  auto* d = static_cast<JpegDecode*>(c->client_data);
  (*c->err->format_message)(c, d->message);
  std::longjmp(d->jmp, 1);
}

// Warnings whose pixels would be invented (libjpeg fills what it lost with grey, or resyncs
// past garbage) end the decode; the rest (extraneous bytes before a marker, an unknown JFIF
// revision, a bad ICC marker) change no pixel and are counted, as libjpeg itself does.
void jpeg_on_message(j_common_ptr c, int level) {
  if (level >= 0) return;  // trace output
  auto* d = static_cast<JpegDecode*>(c->client_data);
  switch (c->err->msg_code) {
    case JWRN_JPEG_EOF:
      set_message(d->message, "file is truncated (premature end of JPEG data)");
      std::longjmp(d->jmp, 1);
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_BOGUS_PROGRESSION:
      (*c->err->format_message)(c, d->message);
      std::longjmp(d->jmp, 1);
    default:
      c->err->num_warnings++;
  }
}

void jpeg_on_output(j_common_ptr) {}  // libjpeg's default prints to stderr

void jpeg_on_progress(j_common_ptr c) {
  auto* d = static_cast<JpegDecode*>(c->client_data);
  auto* cinfo = reinterpret_cast<j_decompress_ptr>(c);
  if (cinfo->input_scan_number > d->limits.max_jpeg_scans) {
    std::snprintf(d->message, kMessageSize,
                  "more than %d progressive scans (ImageLimits::max_jpeg_scans)",
                  d->limits.max_jpeg_scans);
    std::longjmp(d->jmp, 1);
  }
}

// Pillow's cmyk2rgb (libImaging/Convert.c) on true (uninverted) C and K: R = nk - C*nk/255 with
// nk = 255 - K, its MULDIV255 rounding.
inline uint8_t pil_cmyk_channel(unsigned c, unsigned nk) {
  const unsigned t = c * nk + 128;
  const int v = static_cast<int>(nk) - static_cast<int>(((t >> 8) + t) >> 8);
  return static_cast<uint8_t>(std::clamp(v, 0, 255));
}

[[gnu::noinline]] bool jpeg_body(JpegDecode* d) {
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  jpeg_decompress_struct& cinfo = d->cinfo;
  jpeg_mem_src(&cinfo, d->data, static_cast<unsigned long>(d->size));
  cinfo.progress = &d->progress;
  jpeg_read_header(&cinfo, TRUE);
  if (!within_limits(cinfo.image_width, cinfo.image_height, d->limits, d->message)) return false;

  Image& out = *d->out;
  out.source_format = ImageFormat::jpeg;
  out.source_bit_depth = cinfo.data_precision;
  bool four = false;
  switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: out.source_model = ColorModel::grey; break;
    case JCS_YCbCr:
    case JCS_RGB: out.source_model = ColorModel::rgb; break;
    case JCS_CMYK: out.source_model = ColorModel::cmyk; four = true; break;
    case JCS_YCCK: out.source_model = ColorModel::ycck; four = true; break;
    default:
      std::snprintf(d->message, kMessageSize, "unsupported colour space (%d components)",
                    cinfo.num_components);
      return false;
  }
  cinfo.out_color_space = four ? JCS_CMYK : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  const int channels = four ? 4 : 3;
  if (cinfo.output_components != channels) {
    set_message(d->message, "libjpeg did not convert the image to RGB or CMYK");  // a bug of ours
    return false;
  }

  const size_t width = cinfo.output_width;
  out.width = cinfo.output_width;
  out.height = cinfo.output_height;
  out.channels = 3;
  out.pixels.resize(width * cinfo.output_height * 3);
  if (four) d->row.resize(width * 4);
  while (cinfo.output_scanline < cinfo.output_height) {
    uint8_t* rgb = out.pixels.data() + size_t{cinfo.output_scanline} * width * 3;
    JSAMPROW row = four ? d->row.data() : rgb;
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
      set_message(d->message, "libjpeg returned no scanline");  // only a suspending source does
      return false;
    }
    if (four) {
      // Adobe polarity (stored = 255 - ink), as PIL assumes: true C = 255 - stored C, and
      // nk = 255 - true K = stored K.
      for (size_t x = 0; x < width; ++x) {
        const uint8_t* s = d->row.data() + 4 * x;
        const unsigned nk = s[3];
        for (int ch = 0; ch < 3; ++ch) rgb[3 * x + ch] = pil_cmyk_channel(255u - s[ch], nk);
      }
    }
  }
  jpeg_finish_decompress(&cinfo);  // reads to EOI: a missing end is a truncated file
  return true;
}

bool jpeg_run(JpegDecode* d) {
  if (setjmp(d->jmp) != 0) return false;
  return jpeg_body(d);
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name,
                  const ImageLimits& limits) {
  Image out;
  JpegDecode d;
  std::memset(&d.cinfo, 0, sizeof d.cinfo);
  std::memset(&d.progress, 0, sizeof d.progress);
  d.data = data;
  d.size = size;
  d.limits = limits;
  d.out = &out;
  d.cinfo.err = jpeg_std_error(&d.err);
  d.err.error_exit = jpeg_on_error_exit;
  d.err.emit_message = jpeg_on_message;
  d.err.output_message = jpeg_on_output;
  d.cinfo.client_data = &d;
  d.progress.progress_monitor = jpeg_on_progress;
  struct Release {
    JpegDecode& d;
    ~Release() {
      if (d.created) jpeg_destroy_decompress(&d.cinfo);
    }
  } release{d};
  if (!jpeg_run(&d)) fail_format(name, "JPEG: ", d.message);
  return out;
}

// ---- PNG writing ---------------------------------------------------------------------------

struct PngEncode {
  const Image* image = nullptr;
  std::string* out = nullptr;
  std::vector<png_bytep> rows;
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::jmp_buf jmp;
  char message[kMessageSize] = {};
};

void png_encode_on_error(png_structp png, png_const_charp message) {
  auto* e = static_cast<PngEncode*>(png_get_error_ptr(png));
  set_message(e->message, message);
  std::longjmp(e->jmp, 1);
}

void png_write_bytes(png_structp png, png_bytep data, size_t n) {
  auto* e = static_cast<PngEncode*>(png_get_io_ptr(png));
  bool ok = true;
  try {
    e->out->append(reinterpret_cast<const char*>(data), n);
  } catch (...) {  // bad_alloc must not cross libpng's C frames
    ok = false;
  }
  if (!ok) png_error(png, "out of memory");
}

void png_flush_bytes(png_structp) {}

[[gnu::noinline]] bool png_encode_body(PngEncode* e) {
  const Image& image = *e->image;
  e->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e, png_encode_on_error, png_on_warning);
  if (e->png == nullptr) {
    set_message(e->message, "cannot create a libpng writer (out of memory?)");
    return false;
  }
  e->info = png_create_info_struct(e->png);
  if (e->info == nullptr) {
    set_message(e->message, "cannot create a libpng info struct (out of memory?)");
    return false;
  }
  png_set_write_fn(e->png, e, png_write_bytes, png_flush_bytes);
  const int type = image.channels == 1   ? PNG_COLOR_TYPE_GRAY
                   : image.channels == 3 ? PNG_COLOR_TYPE_RGB
                                         : PNG_COLOR_TYPE_RGB_ALPHA;
  png_set_IHDR(e->png, e->info, static_cast<png_uint_32>(image.width),
               static_cast<png_uint_32>(image.height), 8, type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(e->png, e->info);
  const size_t stride = static_cast<size_t>(image.width) * image.channels;
  e->rows.resize(static_cast<size_t>(image.height));
  for (size_t y = 0; y < e->rows.size(); ++y) {
    e->rows[y] = const_cast<png_bytep>(image.pixels.data() + y * stride);  // libpng only reads
  }
  png_write_image(e->png, e->rows.data());
  png_write_end(e->png, nullptr);
  return true;
}

bool png_encode_run(PngEncode* e) {
  if (setjmp(e->jmp) != 0) return false;
  return png_encode_body(e);
}

void check_image(const Image& image, const char* operation) {
  CONCORD_CHECK(image.channels == 1 || image.channels == 3 || image.channels == 4, operation,
                ": an image has 1, 3 or 4 channels, got ", image.channels);
  CONCORD_CHECK(image.width > 0 && image.height > 0 && image.width <= 0x7fffffff &&
                    image.height <= 0x7fffffff,
                operation, ": image size ", image.width, "x", image.height, " is not positive");
  const uint64_t expected =
      static_cast<uint64_t>(image.width) * static_cast<uint64_t>(image.height) * image.channels;
  CONCORD_CHECK(image.pixels.size() == expected, operation, ": a ", image.width, "x",
                image.height, "x", image.channels, " image has ", expected, " bytes, got ",
                image.pixels.size());
}

// What a file that is neither PNG nor JPEG seems to be, for the error message.
std::string guess_other_format(const uint8_t* data, size_t size) {
  auto starts = [&](size_t at, const char* magic) {
    const size_t n = std::strlen(magic);
    return size >= at + n && std::memcmp(data + at, magic, n) == 0;
  };
  if (starts(0, "GIF87a") || starts(0, "GIF89a")) return " (it is a GIF image)";
  if (starts(0, "RIFF") && starts(8, "WEBP")) return " (it is a WebP image)";
  if (starts(0, "BM")) return " (it looks like a BMP image)";
  if (starts(0, "II*") || starts(0, "MM\0*")) return " (it looks like a TIFF image)";
  if (starts(4, "ftypavif") || starts(4, "ftypheic") || starts(4, "ftypmif1")) {
    return " (it looks like an AVIF/HEIF image)";
  }
  return "";
}

}  // namespace

const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::none: return "none";
    case ImageFormat::png: return "png";
    case ImageFormat::jpeg: return "jpeg";
  }
  return "?";
}

const char* color_model_name(ColorModel model) {
  switch (model) {
    case ColorModel::rgb: return "rgb";
    case ColorModel::rgba: return "rgba";
    case ColorModel::grey: return "grey";
    case ColorModel::grey_alpha: return "grey_alpha";
    case ColorModel::palette: return "palette";
    case ColorModel::cmyk: return "cmyk";
    case ColorModel::ycck: return "ycck";
  }
  return "?";
}

std::string describe_source(const Image& image) {
  const char* container = image.source_format == ImageFormat::png    ? "PNG"
                          : image.source_format == ImageFormat::jpeg ? "JPEG"
                                                                     : "image";
  return detail::concat(color_model_name(image.source_model), " ", image.source_bit_depth,
                        "-bit ", container);
}

ImageFormat detect_image_format(const uint8_t* data, size_t size) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 8 && std::memcmp(data, kPng, 8) == 0) return ImageFormat::png;
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return ImageFormat::jpeg;
  return ImageFormat::none;
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const ImageLimits& limits) {
  CONCORD_CHECK(limits.max_side > 0 && limits.max_pixels > 0 && limits.max_jpeg_scans > 0,
                "ImageLimits: every limit must be positive, got max_side ", limits.max_side,
                ", max_pixels ", limits.max_pixels, ", max_jpeg_scans ", limits.max_jpeg_scans);
  if (size == 0) fail_format(name, "empty file, not an image");
  switch (detect_image_format(data, size)) {
    case ImageFormat::png: return decode_png(data, size, name, limits);
    case ImageFormat::jpeg: return decode_jpeg(data, size, name, limits);
    case ImageFormat::none: break;
  }
  fail_format(name, "not a PNG or JPEG file", guess_other_format(data, size));
}

Image decode_image(std::string_view bytes, const std::string& name, const ImageLimits& limits) {
  return decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, limits);
}

Image read_image(const fs::path& path, const ImageLimits& limits) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail_io(path.string(), "is a folder, not an image file");
  const std::string bytes = read_file(path);
  return decode_image(bytes, path.string(), limits);
}

std::string encode_png(const Image& image) {
  check_image(image, "encode_png");
  std::string out;
  PngEncode e;
  e.image = &image;
  e.out = &out;
  struct Release {
    PngEncode& e;
    ~Release() {
      if (e.png != nullptr) png_destroy_write_struct(&e.png, &e.info);
    }
  } release{e};
  if (!png_encode_run(&e)) fail("encode_png: libpng: ", e.message);
  return out;
}

void write_png(const fs::path& path, const Image& image) {
  const std::string bytes = encode_png(image);
  write_file_atomic(path, bytes);
}

at::Tensor image_to_tensor(const Image& image) {
  check_image(image, "image_to_tensor");
  // float32(i) / float32(255): numpy's astype(np.float32) / 255.0 on a float32 array.
  static const std::array<float, 256> kScale = [] {
    std::array<float, 256> a{};
    for (int i = 0; i < 256; ++i) a[i] = static_cast<float>(i) / 255.0f;
    return a;
  }();
  const int64_t c = image.channels, h = image.height, w = image.width;
  at::Tensor t = at::empty({c, h, w}, at::kFloat);
  float* dst = t.data_ptr<float>();
  const uint8_t* src = image.pixels.data();
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const uint8_t* px = src + (y * w + x) * c;
      for (int64_t ch = 0; ch < c; ++ch) dst[(ch * h + y) * w + x] = kScale[px[ch]];
    }
  }
  return t;
}

Image tensor_to_image(const at::Tensor& image) {
  return translate_torch_errors("io::tensor_to_image", [&] {
    CONCORD_CHECK(image.defined() && image.dim() == 3, "tensor_to_image: expected a [C, H, W] "
                  "tensor, got ", image.defined() ? image.sizes() : at::IntArrayRef{});
    const int64_t c = image.size(0), h = image.size(1), w = image.size(2);
    CONCORD_CHECK(c == 1 || c == 3 || c == 4, "tensor_to_image: expected 1, 3 or 4 channels "
                  "first ([C, H, W]), got shape ", image.sizes());
    CONCORD_CHECK(h > 0 && w > 0, "tensor_to_image: empty image, shape ", image.sizes());
    CONCORD_CHECK(at::isFloatingType(image.scalar_type()),
                  "tensor_to_image: expected a floating tensor in [0, 1], got ",
                  image.scalar_type());
    // diffusers' pt_to_numpy calls .float() first; then clamp, * 255 and round, all in float32.
    const at::Tensor t = image.detach().to(at::kCPU).to(at::kFloat).contiguous();
    CONCORD_CHECK(at::isfinite(t).all().item<bool>(),
                  "tensor_to_image: the tensor holds NaN or infinite values (an fp16 VAE "
                  "overflow?); refusing to write an undefined image");
    Image out;
    out.width = w;
    out.height = h;
    out.channels = static_cast<int>(c);
    out.source_model = c == 1 ? ColorModel::grey : c == 3 ? ColorModel::rgb : ColorModel::rgba;
    out.pixels.resize(static_cast<size_t>(c * h * w));
    const float* src = t.data_ptr<float>();
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t y = 0; y < h; ++y) {
        for (int64_t x = 0; x < w; ++x) {
          const float v = std::min(std::max(src[(ch * h + y) * w + x], 0.0f), 1.0f) * 255.0f;
          // nearbyint in the default rounding mode: half to even, as np.round.
          out.pixels[(y * w + x) * c + ch] = static_cast<uint8_t>(std::nearbyint(v));
        }
      }
    }
    return out;
  });
}

}  // namespace concord::io
