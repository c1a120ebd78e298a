// Image-caption pairs -> the latent shards KOALA's distillation trains on (latent_data.h), with
// SDXL's text encoders and VAE, preprocessing as diffusers' SDXL training script
// (train_text_to_image_sdxl.py) does:
//
//   x        = RGB / 255, resized (bilinear, antialiased) so its shorter side is R, the longer
//              floor(R * long / short) (torchvision's Resize(R))
//   crop     = the centre R x R, top = round((h' - R) / 2) with halves to even (Python's round)
//   pixels   = 2 crop - 1;  latents = VAE.encode(pixels) drawn (sample or mode) * scaling_factor
//   time_ids = (original H, original W, top, left, R, R)            (SDXL Sec. 2.2, Eq. 1-2)
//   encoder_hidden_states, text_embeds = SdxlTextEncoders(caption)  (sdxl_text.h)
//
// Bad inputs never stop a run: an unreadable or truncated file, something that is not an image,
// an image whose shorter side is below the minimum (no upscaling), and by default grey-scale and
// CMYK images are counted and listed with their path and reason. The run is resumable: shards are
// written atomically one input chunk at a time and a state file says which chunks are done; each
// sample's posterior draw uses its own generator (seed + record index), so an interrupted and
// resumed run writes the same shards as an uninterrupted one.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "concord/diffusion/sdxl_text.h"
#include "concord/diffusion/vae.h"
#include "concord/io/image.h"

namespace concord::diffusion {

/// One input pair and where it was declared ("captions.jsonl:3", or the image path).
struct ImageCaption {
  std::filesystem::path image;
  std::string caption;
  std::string where;
};

/// A JSONL file of {"image": path (relative to the file's folder), "caption": text}, or a folder
/// whose images (*.png, *.jpg, *.jpeg, by name) each have a caption in a .txt file with the same
/// stem (the layout of most image-caption sets). A JSONL record without both strings is an error
/// naming FILE:LINE; a folder image without its .txt is an error naming the image.
std::vector<ImageCaption> read_image_captions(const std::filesystem::path& path);

/// SDXL's preprocessing of one image (see the file comment).
struct SdxlCrop {
  at::Tensor pixels;                  ///< [3, R, R] fp32 in [-1, 1]
  std::array<int64_t, 6> time_ids{};  ///< original H, W, crop top, left, R, R
};
SdxlCrop sdxl_resize_center_crop(const io::Image& image, int64_t resolution);

struct PrepareLatentsOptions {
  int64_t resolution = 1024;
  int64_t min_side = 0;                ///< shorter side below this is "too small"; 0: resolution
  bool accept_greyscale = false;       ///< else grey-scale sources are listed as bad
  bool accept_cmyk = false;            ///< else CMYK / YCCK JPEGs are listed as bad
  int64_t shard_size = 256;            ///< input records per shard
  int64_t batch_size = 4;              ///< images through the VAE and encoders at once
  PosteriorDraw draw = PosteriorDraw::sample;
  at::ScalarType dtype = at::kFloat;   ///< stored dtype (F32, F16, BF16)
  uint64_t seed = 0;
};

struct BadImage {
  std::string path;
  std::string reason;
};

struct PrepareLatentsResult {
  int64_t records = 0;   ///< input pairs
  int64_t written = 0;   ///< samples in the shards
  int64_t shards = 0;
  std::vector<BadImage> bad;
  bool resumed = false;  ///< some chunks were already done
};

/// Writes shard-00000.safetensors, ... and state.json into `out`. With `resume`, chunks that
/// state.json marks done (with the same inputs and options) are kept, not recomputed; without
/// it, a folder that already holds *.safetensors is a ConfigError (nothing is deleted).
/// time_ids are stored in fp32 whatever `dtype` says (pixel counts do not survive bf16).
/// `progress(done, total)` is called after each chunk.
PrepareLatentsResult prepare_latents(const std::vector<ImageCaption>& inputs,
                                     const SdxlTextEncoders& text, AutoencoderKL vae,
                                     const std::filesystem::path& out,
                                     const PrepareLatentsOptions& options, bool resume = false,
                                     const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace concord::diffusion
