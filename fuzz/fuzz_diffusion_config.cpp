// libFuzzer target for the diffusers / transformers component configs and the image-caption
// list of prepare_latents (concord_diffusion):
//   - the input parsed as JSON is given to clip_text_config_from_json, vae_config_from_json,
//     unet_config_from_json and euler_options_from_json. Each must return a config or throw a
//     concord::Error (one line, naming the source); a crash, another exception (c10::Error,
//     nlohmann's), a sanitizer report (a signed overflow in a parameter count, a division by
//     zero) or an allocation beyond the fuzzer's limit is a bug. An accepted config must survive
//     its *_to_json round trip unchanged and have a positive parameter count; one small enough
//     (at most kMaxBuilt parameters) is built, so a config that validate() passes but a module
//     constructor refuses is found too. An accepted scheduler builds an EulerSampler.
//   - the input written to a file is read by read_image_captions as JSONL; a bad record must be a
//     one-line concord::Error naming FILE:LINE.
// Seeds: fuzz/corpus/diffusion_config (the fixture SDXL pipeline's configs, configs/models'
// SDXL U-Net and VAE and KOALA students, prepare_latents' captions.jsonl);
// dictionary: diffusion_config.dict.
// Build and run: scripts/fuzz.sh 60 fuzz_diffusion_config
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/diffusion/clip_text_encoder.h"
#include "concord/diffusion/prepare_latents.h"
#include "concord/diffusion/schedulers.h"
#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_config.h"
#include "concord/diffusion/vae.h"
#include "concord/diffusion/vae_config.h"
#include "fuzz_scratch.h"

namespace fs = std::filesystem;
namespace cd = concord::diffusion;

namespace {

constexpr int64_t kMaxBuilt = 300'000;

void check(bool cond, const char* what, const std::string& detail = "") {
  if (!cond) {
    std::fprintf(stderr, "invariant violated: %s %s\n", what, detail.c_str());
    std::abort();
  }
}

void check_message(const concord::Error& e, const std::string& source) {
  const std::string what = e.what();
  check(what.find('\n') == std::string::npos, "message spans lines:", what);
  check(what.find(source) != std::string::npos, "message does not name the source:", what);
}

// Runs `fn`; a concord::Error is an accepted rejection, its message checked.
template <typename Fn>
void accept_or_reject(const std::string& source, Fn&& fn) {
  try {
    fn();
  } catch (const concord::Error& e) {
    check_message(e, source);
  }
}

const fs::path& scratch() {
  static const concord::fuzz::Scratch s("fuzz_diffusion_config");
  return s.dir;
}

void configs(const concord::Json& j) {
  accept_or_reject("clip.json", [&] {
    const cd::ClipTextConfig c = cd::clip_text_config_from_json(j, "clip.json");
    const concord::Json out = cd::clip_text_config_to_json(c);
    check(cd::clip_text_config_to_json(cd::clip_text_config_from_json(out, "clip.json")) == out,
          "clip round trip");
    const int64_t n = cd::count_clip_text_parameters(c);
    check(n > 0, "clip parameter count", std::to_string(n));
    if (n <= kMaxBuilt) {
      cd::ClipTextModel model(c);
      int64_t built = 0;
      for (const auto& p : model->parameters()) built += p.numel();
      check(built == n, "clip parameters built != counted", std::to_string(built));
    }
  });
  accept_or_reject("vae.json", [&] {
    const cd::AutoencoderKLConfig c = cd::vae_config_from_json(j, "vae.json");
    const concord::Json out = cd::vae_config_to_json(c);
    check(cd::vae_config_to_json(cd::vae_config_from_json(out, "vae.json")) == out, "vae round trip");
    (void)c.downsampling_factor();
    const int64_t n = cd::count_vae_parameters(c);
    check(n > 0, "vae parameter count", std::to_string(n));
    if (n <= kMaxBuilt) {
      cd::AutoencoderKL model(c);
      int64_t built = 0;
      for (const auto& p : model->parameters()) built += p.numel();
      check(built == n, "vae parameters built != counted", std::to_string(built));
    }
  });
  accept_or_reject("unet.json", [&] {
    const cd::UNetConfig c = cd::unet_config_from_json(j, "unet.json");
    const concord::Json out = cd::unet_config_to_json(c);
    check(cd::unet_config_to_json(cd::unet_config_from_json(out, "unet.json")) == out,
          "unet round trip");
    const int64_t n = cd::count_unet_parameters(c);
    check(n > 0, "unet parameter count", std::to_string(n));
    if (n <= kMaxBuilt) {
      cd::UNet2DCondition model(c);
      int64_t built = 0;
      for (const auto& p : model->parameters()) built += p.numel();
      check(built == n, "unet parameters built != counted", std::to_string(built));
    }
  });
  accept_or_reject("scheduler.json", [&] {
    const cd::EulerOptions o = cd::euler_options_from_json(j, "scheduler.json");
    const int64_t T = o.training.num_train_timesteps;
    for (int64_t n : {int64_t{1}, std::min<int64_t>(T, 4)}) {
      cd::EulerSampler sampler(o, n);
      check(sampler.timesteps().size(0) == n && sampler.sigmas().size(0) == n + 1, "euler sizes");
    }
  });
}

void captions(const uint8_t* data, size_t size) {
  const fs::path file = scratch() / "captions.jsonl";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    if (!out) std::abort();
  }
  accept_or_reject(file.string(), [&] {
    for (const auto& r : cd::read_image_captions(file)) {
      check(!r.image.empty(), "empty image path");
      check(r.where.rfind(file.string() + ":", 0) == 0, "record location", r.where);
    }
  });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    configs(concord::parse_json(text, "fuzz.json"));
  } catch (const concord::FormatError& e) {
    check_message(e, "fuzz.json");
  }
  captions(data, size);
  return 0;
}
