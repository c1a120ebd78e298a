#include "concord/diffusion/prepare_latents.h"

#include <torch/csrc/autograd/grad_mode.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/data/jsonl.h"
#include "concord/io/safetensors.h"

namespace concord::diffusion {

namespace fs = std::filesystem;

namespace {

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

std::string read_caption_file(const fs::path& p) {
  std::string text = read_file(p);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

// Python's round(): halves to even (the SDXL script's centre crop uses it).
int64_t round_half_even(double x) {
  const int mode = std::fegetround();
  std::fesetround(FE_TONEAREST);
  const double r = std::nearbyint(x);
  std::fesetround(mode);
  return static_cast<int64_t>(r);
}

const char* draw_name(PosteriorDraw d) { return d == PosteriorDraw::sample ? "sample" : "mode"; }

// What must match for a resumed run to keep the chunks already written.
std::string fingerprint(const std::vector<ImageCaption>& inputs, const PrepareLatentsOptions& o) {
  size_t h = 0;
  auto mix = [&h](const std::string& s) { h ^= std::hash<std::string>{}(s) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
  for (const auto& in : inputs) {
    mix(in.image.string());
    mix(in.caption);
  }
  Json j = {{"records", inputs.size()},   {"inputs_hash", std::to_string(h)},
            {"resolution", o.resolution}, {"min_side", o.min_side},
            {"accept_greyscale", o.accept_greyscale}, {"accept_cmyk", o.accept_cmyk},
            {"shard_size", o.shard_size}, {"draw", draw_name(o.draw)},
            {"dtype", std::string(c10::toString(o.dtype))}, {"seed", o.seed}};
  return j.dump();
}

// Why an image is refused, or "".
std::string refusal(const io::Image& image, const PrepareLatentsOptions& o, int64_t min_side) {
  const bool grey = image.source_model == io::ColorModel::grey ||
                    image.source_model == io::ColorModel::grey_alpha;
  const bool cmyk = image.source_model == io::ColorModel::cmyk ||
                    image.source_model == io::ColorModel::ycck;
  if (grey && !o.accept_greyscale) return "grey-scale (" + io::describe_source(image) + ")";
  if (cmyk && !o.accept_cmyk) return "CMYK (" + io::describe_source(image) + ")";
  if (std::min(image.width, image.height) < min_side) {
    return "too small: " + std::to_string(image.width) + "x" + std::to_string(image.height) +
           ", the shorter side must be at least " + std::to_string(min_side);
  }
  return "";
}

}  // namespace

std::vector<ImageCaption> read_image_captions(const fs::path& path) {
  std::vector<ImageCaption> out;
  if (fs::is_directory(path)) {
    std::vector<fs::path> images;
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.is_regular_file() && is_image_name(e.path())) images.push_back(e.path());
    }
    std::sort(images.begin(), images.end());
    for (const auto& image : images) {
      fs::path caption = image;
      caption.replace_extension(".txt");
      if (!fs::is_regular_file(caption)) {
        fail_format(image.string(), ": no caption (expected ", caption.filename().string(), ")");
      }
      out.push_back({image, read_caption_file(caption), image.string()});
    }
    if (out.empty()) fail_io(path.string(), "no images (*.png, *.jpg, *.jpeg) in this folder");
    return out;
  }
  if (!fs::is_regular_file(path)) fail_io(path.string(), "no such file or folder");
  data::JsonlReader reader(path);
  const fs::path base = path.parent_path();
  reader.for_each([&](const Json& r, const data::RecordLocation& loc) {
    auto image = r.find("image");
    auto caption = r.find("caption");
    if (image == r.end() || !image->is_string() || image->get<std::string>().empty()) {
      loc.fail("expected a string \"image\" (a path relative to the file's folder)");
    }
    if (caption == r.end() || !caption->is_string()) loc.fail("expected a string \"caption\"");
    const fs::path p = image->get<std::string>();
    out.push_back({p.is_absolute() ? p : base / p, caption->get<std::string>(),
                   loc.file + ":" + std::to_string(loc.line)});
  });
  if (out.empty()) fail_format(path.string(), "no records");
  return out;
}

SdxlCrop sdxl_resize_center_crop(const io::Image& image, int64_t r) {
  CONCORD_CHECK(r >= 8, "sdxl_resize_center_crop: resolution ", r, " is too small");
  const int64_t h = image.height, w = image.width;
  CONCORD_CHECK(std::min(h, w) >= 1, "sdxl_resize_center_crop: empty image");
  // torchvision Resize(r): the shorter side becomes r, the longer int(r * long / short).
  const int64_t nh = h <= w ? r : r * h / w;
  const int64_t nw = h <= w ? r * w / h : r;
  const at::Tensor x = io::image_to_tensor(image).unsqueeze(0);
  const at::Tensor resized =
      (nh == h && nw == w) ? x
                           : at::_upsample_bilinear2d_aa(x, {nh, nw}, /*align_corners=*/false,
                                                         c10::nullopt, c10::nullopt);
  const int64_t top = round_half_even(static_cast<double>(nh - r) / 2.0);
  const int64_t left = round_half_even(static_cast<double>(nw - r) / 2.0);
  SdxlCrop out;
  out.pixels = resized[0].narrow(1, top, r).narrow(2, left, r) * 2 - 1;
  out.time_ids = {h, w, top, left, r, r};
  return out;
}

PrepareLatentsResult prepare_latents(const std::vector<ImageCaption>& inputs,
                                     const SdxlTextEncoders& text, AutoencoderKL vae,
                                     const fs::path& out, const PrepareLatentsOptions& o,
                                     bool resume,
                                     const std::function<void(int64_t, int64_t)>& progress) {
  CONCORD_CHECK(!inputs.empty(), "prepare_latents: no inputs");
  CONCORD_CHECK(o.shard_size >= 1 && o.batch_size >= 1, "prepare_latents: shard_size and "
                "batch_size must be >= 1");
  const int64_t f = vae->config.downsampling_factor();
  CONCORD_CHECK(o.resolution % f == 0, "prepare_latents: resolution ", o.resolution,
                " is not a multiple of the VAE's factor ", f);
  CONCORD_CHECK(o.dtype == at::kFloat || o.dtype == at::kHalf || o.dtype == at::kBFloat16,
                "prepare_latents: stored dtype must be float32, float16 or bfloat16");
  const int64_t min_side = o.min_side > 0 ? o.min_side : o.resolution;
  fs::create_directories(out);
  const fs::path state_path = out / "state.json";
  const std::string print = fingerprint(inputs, o);

  PrepareLatentsResult result;
  result.records = static_cast<int64_t>(inputs.size());
  const int64_t chunks = (result.records + o.shard_size - 1) / o.shard_size;
  int64_t next_chunk = 0;
  if (resume && fs::exists(state_path)) {
    const Json state = load_json_file(state_path);
    if (state.value("fingerprint", std::string()) != print) {
      fail_config(state_path.string(), "was written for other inputs or options; start a new "
                                       "run folder or remove it");
    }
    next_chunk = state.at("next_chunk").get<int64_t>();
    result.written = state.at("written").get<int64_t>();
    result.shards = state.at("shards").get<int64_t>();
    for (const auto& b : state.at("bad")) result.bad.push_back({b.at("path"), b.at("reason")});
    result.resumed = next_chunk > 0;
  } else {
    // A fresh run into a folder that already holds shards would mix two sets (LatentShards reads
    // every *.safetensors there): refused, nothing deleted.
    for (const auto& e : fs::directory_iterator(out)) {
      if (e.path().extension() == ".safetensors") {
        fail_config(out.string(), "already holds shards (", e.path().filename().string(),
                    "); write into an empty folder, or resume the run that wrote them");
      }
    }
  }
  auto save_state = [&](int64_t next) {
    Json bad = Json::array();
    for (const auto& b : result.bad) bad.push_back({{"path", b.path}, {"reason", b.reason}});
    const Json state = {{"fingerprint", print}, {"next_chunk", next}, {"chunks", chunks},
                        {"written", result.written}, {"shards", result.shards}, {"bad", bad}};
    write_file_atomic(state_path, state.dump(2) + "\n");
  };

  torch::NoGradGuard no_grad;
  const at::Tensor vae_param = vae->parameters().front();
  for (int64_t c = next_chunk; c < chunks; ++c) {
    const int64_t begin = c * o.shard_size;
    const int64_t end = std::min(result.records, begin + o.shard_size);
    std::vector<at::Tensor> latents, states, pooled, time_ids;
    std::vector<int64_t> batch_index;
    std::vector<at::Tensor> batch_pixels;
    std::vector<std::string> batch_captions;
    std::vector<std::array<int64_t, 6>> batch_ids;
    auto flush = [&] {
      if (batch_index.empty()) return;
      const at::Tensor pixels = at::stack(batch_pixels).to(vae_param.device(), vae_param.scalar_type());
      const DiagonalGaussian posterior = vae->encode(pixels);
      at::Tensor z = posterior.mean;
      if (o.draw == PosteriorDraw::sample) {
        // One generator a record: the draw does not depend on batching or resuming.
        std::vector<at::Tensor> eps;
        for (int64_t index : batch_index) {
          at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed + static_cast<uint64_t>(index));
          eps.push_back(at::randn(posterior.mean.sizes().slice(1), gen, at::kFloat));
        }
        z = posterior.mean + posterior.std * at::stack(eps).to(z.device(), z.scalar_type());
      }
      latents.push_back(normalize_latents(vae->config, z).to(at::kCPU, at::kFloat));
      const SdxlPromptEmbeds e = text.encode(batch_captions);
      states.push_back(e.embeds.to(at::kCPU, at::kFloat));
      pooled.push_back(e.pooled.to(at::kCPU, at::kFloat));
      for (const auto& ids : batch_ids) {
        time_ids.push_back(at::tensor(std::vector<int64_t>(ids.begin(), ids.end()), at::kFloat));
      }
      batch_index.clear();
      batch_pixels.clear();
      batch_captions.clear();
      batch_ids.clear();
    };
    for (int64_t i = begin; i < end; ++i) {
      const ImageCaption& in = inputs[static_cast<size_t>(i)];
      io::Image image;
      try {
        image = io::read_image(in.image);
      } catch (const Error& e) {
        result.bad.push_back({in.image.string(), e.what()});
        continue;
      }
      if (std::string why = refusal(image, o, min_side); !why.empty()) {
        result.bad.push_back({in.image.string(), why});
        continue;
      }
      SdxlCrop crop = sdxl_resize_center_crop(image, o.resolution);
      batch_index.push_back(i);
      batch_pixels.push_back(crop.pixels);
      batch_captions.push_back(in.caption);
      batch_ids.push_back(crop.time_ids);
      if (static_cast<int64_t>(batch_index.size()) == o.batch_size) flush();
    }
    flush();
    if (!latents.empty()) {
      std::map<std::string, at::Tensor> shard = {
          {"latents", at::cat(latents).to(o.dtype)},
          {"encoder_hidden_states", at::cat(states).to(o.dtype)},
          {"text_embeds", at::cat(pooled).to(o.dtype)},
          // Pixel counts: bf16 would round 1366 to 1368.
          {"time_ids", at::stack(time_ids)}};
      char name[48];  // room for any int64 shard number
      std::snprintf(name, sizeof(name), "shard-%05lld.safetensors", static_cast<long long>(c));
      io::save_safetensors(out / name, shard, {{"format", "pt"}});
      result.written += shard["latents"].size(0);
      ++result.shards;
    }
    save_state(c + 1);
    if (progress) progress(c + 1, chunks);
  }
  return result;
}

}  // namespace concord::diffusion
