// Image files for the text-to-image pipeline (SDXL / KOALA): PNG through libpng, JPEG through
// libjpeg-turbo, so the pixels a prompt set's reference images or a sampler's outputs carry are
// the ones PIL gives the Python side (diffusers' VaeImageProcessor opens images with PIL and
// calls convert("RGB")).
//
// Decoding always yields 8-bit interleaved RGB, and says what the file held so a caller can
// refuse what it does not want ("grey 16-bit PNG", "cmyk 8-bit JPEG"):
//   PNG   palette expanded (tRNS ignored); 1/2/4-bit grey expanded to 8; 16-bit samples keep
//         their high byte (libpng's png_set_strip_16; PIL does the same for 16-bit RGB, but its
//         convert("RGB") of 16-bit grey clips to 255 instead); alpha discarded, as
//         convert("RGB") does (no compositing on a background); grey replicated to R=G=B;
//         Adam7 interlacing undone; gAMA/iCCP/sBIT ignored, as PIL does.
//   JPEG  libjpeg's default decompression (ISLOW IDCT, fancy upsampling), YCbCr and grey
//         converted to RGB by libjpeg. Four-component files (CMYK, and YCCK which libjpeg turns
//         into CMYK) are taken in Adobe polarity (inverted), as PIL assumes for every CMYK JPEG,
//         and converted with PIL's CMYK->RGB formula (R = (255-C)(255-K)/255 on true C, K, in
//         its rounding), so the result equals PIL's convert("RGB") but is no colour-managed
//         conversion: refuse source_model cmyk / ycck if that matters.
//
// Bad input never crashes or aborts: libpng's and libjpeg's error handlers are replaced (they
// longjmp back into the function that called the library, which then throws), and libjpeg's
// warnings that mean pixels were lost (premature end of file, corrupt entropy-coded data) are
// errors too, where PIL would hand back grey or garbage blocks. Errors are
// concord::FormatError "<name>: <format>: <reason>" (IoError when the file cannot be read).
#pragma once
#include <ATen/ATen.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace concord::io {

/// The container a decoded image came from; `none` for an image made in memory.
enum class ImageFormat : uint8_t { none, png, jpeg };

/// The colour model of the source file, before conversion to RGB.
enum class ColorModel : uint8_t { rgb, rgba, grey, grey_alpha, palette, cmyk, ycck };

/// "none", "png", "jpeg".
const char* image_format_name(ImageFormat format);
/// "rgb", "rgba", "grey", "grey_alpha", "palette", "cmyk", "ycck".
const char* color_model_name(ColorModel model);

/// An 8-bit image, rows top to bottom, channels interleaved: pixel (x, y) channel c is
/// pixels[(y * width + x) * channels + c]. Decoding gives channels = 3 (RGB).
struct Image {
  int64_t width = 0;
  int64_t height = 0;
  /// 3 = RGB (what decoding gives); write_png also takes 1 (grey) and 4 (RGBA).
  int channels = 3;
  std::vector<uint8_t> pixels;

  /// What the file held. For an image made in memory: none, the model of its channels, 8.
  ImageFormat source_format = ImageFormat::none;
  ColorModel source_model = ColorModel::rgb;
  /// Bits per sample in the file: 1, 2, 4, 8 or 16 for PNG (per palette index for palette
  /// images), 8 for JPEG.
  int source_bit_depth = 8;
};

/// "grey 16-bit PNG", "rgb 8-bit JPEG", "rgb 8-bit image" (made in memory): for messages that
/// say why an image is refused.
std::string describe_source(const Image& image);

/// Sizes past which a file is refused before any pixel memory is allocated. Decoding allocates
/// 3 bytes a pixel for the result (768 MiB at the defaults) plus, for a progressive JPEG, about
/// 2 bytes a pixel and component inside libjpeg; lower the limits for untrusted input.
struct ImageLimits {
  /// Largest width or height.
  int64_t max_side = 16384;
  /// Largest width * height.
  int64_t max_pixels = int64_t{1} << 28;
  /// Most scans of a progressive JPEG (each rereads the whole image: a few hundred bytes of
  /// scans can cost minutes); 500 is libjpeg-turbo's own recommendation for untrusted input.
  int max_jpeg_scans = 500;
};

/// The format by the file's first bytes (PNG signature, JPEG SOI + marker), not its name;
/// `none` for anything else.
ImageFormat detect_image_format(const uint8_t* data, size_t size);

/// Decodes a whole PNG or JPEG file held in memory into RGB. `name` names it in errors (a path,
/// or e.g. "<memory>"). Throws concord::FormatError for an unknown format, a truncated or
/// corrupt file, or one over `limits`; never reads outside [data, data + size).
Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const ImageLimits& limits = {});
Image decode_image(std::string_view bytes, const std::string& name,
                   const ImageLimits& limits = {});

/// Reads and decodes an image file. IoError when it cannot be read; otherwise as decode_image.
Image read_image(const std::filesystem::path& path, const ImageLimits& limits = {});

/// The PNG bytes of an 8-bit image with 1, 3 or 4 channels (grey, RGB, RGBA), non-interlaced,
/// zlib's default compression. Throws concord::Error for an inconsistent Image.
std::string encode_png(const Image& image);

/// encode_png written atomically (temporary file in the same folder, fsync, rename): `path`
/// holds either its old contents or the whole new image, never a torn file.
void write_png(const std::filesystem::path& path, const Image& image);

/// Float32 [channels, height, width] in [0, 1] on the CPU: pixel / 255 in float32, as
/// diffusers' VaeImageProcessor computes it (np.array(img).astype(np.float32) / 255.0).
at::Tensor image_to_tensor(const Image& image);

/// The inverse, as diffusers' numpy_to_pil: any floating [C, H, W] tensor (C = 1, 3 or 4, any
/// device) is converted to float32, clamped to [0, 1], multiplied by 255 and rounded half to
/// even. Throws concord::Error for another shape or dtype, or for a NaN or infinite value (the
/// mark of an fp16 VAE overflow, which numpy would cast to an undefined byte).
Image tensor_to_image(const at::Tensor& image);

}  // namespace concord::io
