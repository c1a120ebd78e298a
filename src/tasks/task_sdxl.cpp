#include "task_sdxl.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/runtime.h"
#include "concord/diffusion/prepare_latents.h"
#include "concord/diffusion/vae.h"
#include "concord/io/contact_sheet.h"
#include "concord/io/image.h"
#include "concord/io/safetensors.h"
#include "concord/tasks/text_input.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

at::ScalarType dtype_named(const std::string& name) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

// ---- generate_images -------------------------------------------------------------------------

struct GenerateImagesOptions {
  std::string pipeline;
  std::string unet;
  std::vector<std::string> prompts;
  std::string prompts_file;
  std::optional<std::string> negative_prompt;
  int64_t steps = 50;
  double guidance_scale = 5.0;
  double guidance_rescale = 0.0;
  int64_t height = 0;
  int64_t width = 0;
  int64_t images_per_prompt = 1;
  int64_t batch_size = 1;
  int64_t clip_skip = 0;
  std::string timestep_spacing;
  std::string device = "cpu";
  std::string dtype = "float32";
  bool save_latents = false;
  int64_t sheet_cell = 256;
  int64_t sheet_max_images = 64;
};

const OptionsSchema<GenerateImagesOptions>& generate_images_schema() {
  static const OptionsSchema<GenerateImagesOptions> schema = [] {
    using O = GenerateImagesOptions;
    OptionsSchema<O> s("generate_images task");
    s.field("pipeline", &O::pipeline,
            "a diffusers StableDiffusionXLPipeline folder (model_index.json, unet/, vae/, "
            "text_encoder(_2)/, tokenizer(_2)/, scheduler/)", opt::required())
        .field("unet", &O::unet, "a U-Net folder used instead of the pipeline's (KOALA-1B, "
                                 "-700M, a koala_kd student); empty: the pipeline's")
        .field("prompts", &O::prompts, "the prompts (or prompts_file)")
        .field("prompts_file", &O::prompts_file,
               "a .txt file (one prompt a line) or a JSONL file with a \"text\" per record")
        .field("negative_prompt", &O::negative_prompt,
               "one negative prompt for all; null: zero negatives when the pipeline's "
               "force_zeros_for_empty_prompt says so (SDXL base), else \"\"")
        .field("steps", &O::steps, "Euler steps (diffusers' default 50)", opt::at_least(1))
        .field("guidance_scale", &O::guidance_scale, "classifier-free guidance g (<= 1: off)",
               opt::at_least(0))
        .field("guidance_rescale", &O::guidance_rescale, "phi of Lin et al. 2023 (0: off)",
               opt::at_least(0), opt::at_most(1))
        .field("height", &O::height, "pixels (0: the U-Net's sample_size x the VAE's factor)",
               opt::at_least(0))
        .field("width", &O::width, "pixels (0: as height)", opt::at_least(0))
        .field("images_per_prompt", &O::images_per_prompt, "images of each prompt", opt::at_least(1))
        .field("batch_size", &O::batch_size, "images denoised together", opt::at_least(1))
        .field("clip_skip", &O::clip_skip, "text layers skipped from the penultimate",
               opt::at_least(0))
        .field("timestep_spacing", &O::timestep_spacing,
               "override the scheduler's (leading, trailing, linspace); empty: the config's",
               opt::one_of({"", "leading", "trailing", "linspace"}))
        .field("device", &O::device, "cpu, cuda, cuda:N or auto")
        .field("dtype", &O::dtype, "weights' dtype", opt::one_of({"float32", "bfloat16", "float16"}))
        .field("save_latents", &O::save_latents, "also write latents.safetensors (final latents)")
        .field("sheet_cell", &O::sheet_cell, "contact-sheet cell size in pixels", opt::at_least(32),
               opt::at_most(1024))
        .field("sheet_max_images", &O::sheet_max_images,
               "the contact sheet shows the first this many images (0: all; the sheet holds "
               "each image decoded in memory)", opt::at_least(0));
    return s;
  }();
  return schema;
}

std::vector<std::string> read_prompts(const GenerateImagesOptions& o) {
  std::vector<std::string> prompts = o.prompts;
  if (!o.prompts_file.empty()) {
    if (fs::path(o.prompts_file).extension() == ".jsonl") {
      for (auto& t : read_jsonl_texts(o.prompts_file)) prompts.push_back(std::move(t));
    } else {
      std::ifstream in(o.prompts_file);
      if (!in) fail_io(o.prompts_file, "cannot open");
      for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty()) prompts.push_back(line);
      }
    }
  }
  if (prompts.empty()) fail_config("generate_images task", "no prompts (set prompts or prompts_file)");
  return prompts;
}

// What a resumed run must share with the run that wrote the images it keeps.
Json generation_settings(const GenerateImagesOptions& o, const std::vector<std::string>& prompts,
                         uint64_t seed) {
  Json j = generate_images_schema().to_json(o);
  for (const char* transient : {"batch_size", "device", "save_latents", "sheet_cell",
                                "sheet_max_images", "prompts_file"}) {
    j.erase(transient);
  }
  j["prompts"] = prompts;
  j["seed"] = seed;
  return j;
}

void run_generate_images(const Json& config, RunDirectory& dir, Report& report) {
  const GenerateImagesOptions o = generate_images_schema().read(config);
  const std::vector<std::string> prompts = read_prompts(o);
  const c10::Device device = select_device(o.device);
  if (o.dtype == "float16" && device.is_cpu()) {
    fail_config("generate_images task", "dtype float16 needs a CUDA device (LibTorch's CPU "
                                        "kernels lack it); use float32 or bfloat16 on the CPU");
  }
  const uint64_t seed = config["seed"].get<uint64_t>();
  const Json settings = generation_settings(o, prompts, seed);
  const fs::path settings_file = dir.file("generation.json");
  if (dir.resuming() && fs::exists(settings_file)) {
    const Json before = load_json_file(settings_file);
    for (const auto& [key, value] : settings.items()) {
      if (!before.contains(key) || before[key] != value) {
        fail_config(settings_file.string(), "key '", key, "' differs from the run being resumed (",
                    before.contains(key) ? before[key].dump() : "absent", " there, ", value.dump(),
                    " now): its images would be listed under other settings; use a new folder");
      }
    }
  }
  write_file_atomic(settings_file, settings.dump(2) + "\n");
  diffusion::SdxlLoadOptions lo;
  lo.components.device = device;
  lo.components.dtype = dtype_named(o.dtype);
  lo.unet = o.unet;
  diffusion::SdxlPipeline pipe = diffusion::SdxlPipeline::load(o.pipeline, lo);
  diffusion::SdxlGenerateOptions g;
  g.height = o.height > 0 ? o.height : pipe.default_height();
  g.width = o.width > 0 ? o.width : g.height;
  g.num_inference_steps = o.steps;
  g.guidance_scale = o.guidance_scale;
  g.guidance_rescale = o.guidance_rescale;
  if (o.negative_prompt) g.negative_prompt = std::vector<std::string>{*o.negative_prompt};
  g.clip_skip = o.clip_skip;
  g.timestep_spacing = o.timestep_spacing;

  // Image k (prompt k / images_per_prompt) starts from the noise of seed + k: batching and
  // resuming do not change a picture.
  struct Job { int64_t index; std::string prompt; };
  std::vector<Job> jobs;
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (int64_t j = 0; j < o.images_per_prompt; ++j) {
      jobs.push_back({static_cast<int64_t>(jobs.size()), prompts[p]});
    }
  }
  const fs::path images_dir = dir.file("images");
  fs::create_directories(images_dir);
  std::map<std::string, at::Tensor> latents;
  int64_t done = 0, skipped = 0;
  for (size_t b = 0; b < jobs.size(); b += static_cast<size_t>(o.batch_size)) {
    std::vector<Job> batch;
    for (size_t k = b; k < std::min(jobs.size(), b + static_cast<size_t>(o.batch_size)); ++k) {
      if (dir.resuming() && fs::exists(images_dir / png_name(jobs[k].index)) && !o.save_latents) {
        ++skipped;
        continue;
      }
      batch.push_back(jobs[k]);
    }
    if (batch.empty()) continue;
    std::vector<std::string> batch_prompts;
    std::vector<at::Tensor> noise;
    for (const auto& job : batch) {
      batch_prompts.push_back(job.prompt);
      noise.push_back(pipe.initial_noise(1, g.height, g.width, seed + static_cast<uint64_t>(job.index)));
    }
    const auto started = std::chrono::steady_clock::now();
    const auto out = pipe.generate(batch_prompts, g, at::cat(noise), true, [&](int64_t i, int64_t n) {
      if (i == n || i % 10 == 0) spdlog::info("images {}-{}: step {}/{}", batch.front().index, batch.back().index, i, n);
    });
    for (size_t i = 0; i < batch.size(); ++i) {
      io::write_png(images_dir / png_name(batch[i].index),
                    io::tensor_to_image(out.images[static_cast<int64_t>(i)]));
      if (o.save_latents) latents["image_" + std::to_string(batch[i].index)] = out.latents[static_cast<int64_t>(i)];
    }
    done += static_cast<int64_t>(batch.size());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    dir.metrics().log(done, {{"images", static_cast<double>(done)},
                             {"seconds_per_image", seconds / static_cast<double>(batch.size())}});
  }
  if (o.save_latents) io::save_safetensors(dir.file("latents.safetensors"), latents);

  // The index and the contact sheet cover every image, including those of an earlier try.
  std::vector<io::Image> sheet_images;
  std::vector<std::string> captions;
  std::vector<Json> index;
  std::vector<std::vector<std::string>> rows;
  for (const auto& job : jobs) {
    const std::string file = png_name(job.index);
    if (o.sheet_max_images == 0 || job.index < o.sheet_max_images) {
      sheet_images.push_back(io::read_image(images_dir / file));
      captions.push_back(job.prompt);
    }
    index.push_back({{"image", "images/" + file}, {"prompt", job.prompt},
                     {"seed", seed + static_cast<uint64_t>(job.index)}});
    rows.push_back({"[" + file + "](images/" + file + ")", job.prompt,
                    std::to_string(seed + static_cast<uint64_t>(job.index))});
  }
  std::string jsonl;
  for (const auto& j : index) jsonl += j.dump() + "\n";
  write_file_atomic(dir.file("images.jsonl"), jsonl);
  io::ContactSheetOptions so;
  so.cell_width = so.cell_height = o.sheet_cell;
  so.title = "generate_images: " + std::to_string(sheet_images.size()) + " of " +
             std::to_string(jobs.size()) + " images, " +
             std::to_string(o.steps) + " steps, guidance " + fixed(o.guidance_scale, 1);
  io::write_contact_sheet(dir.file("contact_sheet.png"), sheet_images, captions, so);

  const auto& unet = pipe.unet();
  report.heading("Setup").table(
      {"", ""},
      {{"pipeline", "`" + o.pipeline + "`"},
       {"U-Net", "`" + (o.unet.empty() ? o.pipeline + "/unet" : o.unet) + "` (" +
                     std::to_string(unet->num_parameters()) + " parameters)"},
       {"size", std::to_string(g.width) + "x" + std::to_string(g.height)},
       {"sampling", std::to_string(o.steps) + " Euler steps (" +
                        (g.timestep_spacing.empty() ? pipe.scheduler().timestep_spacing : g.timestep_spacing) +
                        "), guidance " + fixed(o.guidance_scale, 2)},
       {"images", std::to_string(done) + " made" +
                      (skipped ? ", " + std::to_string(skipped) + " kept from before" : std::string())}});
  report.image("contact sheet", "contact_sheet.png");
  report.heading("Images").table({"file", "prompt", "seed"}, rows);
}

// ---- prepare_latents -------------------------------------------------------------------------

struct PrepareLatentsTaskOptions {
  std::string pipeline;
  std::string data;
  std::string output;
  std::string device = "cpu";
  std::string latent = "sample";
  std::string dtype = "float32";
  diffusion::PrepareLatentsOptions prepare;
};

const OptionsSchema<PrepareLatentsTaskOptions>& prepare_latents_schema() {
  static const OptionsSchema<PrepareLatentsTaskOptions> schema = [] {
    using O = PrepareLatentsTaskOptions;
    using P = diffusion::PrepareLatentsOptions;
    OptionsSchema<O> s("prepare_latents task");
    s.field("pipeline", &O::pipeline,
            "a diffusers SDXL folder: its vae/, text_encoder(_2)/ and tokenizer(_2)/ are used",
            opt::required())
        .field("data", &O::data,
               "a JSONL of {\"image\": path, \"caption\": text} (paths relative to the file) or "
               "a folder of images with same-named .txt captions", opt::required())
        .field("output", &O::output, "the shard folder (empty: <run>/latents)")
        .field("device", &O::device, "cpu, cuda, cuda:N or auto")
        .field("latent", &O::latent, "sample (the training scripts' latent_dist.sample()) or mode",
               opt::one_of({"sample", "mode"}))
        .field("dtype", &O::dtype, "stored dtype", opt::one_of({"float32", "float16", "bfloat16"}))
        .field("resolution", &O::prepare, &P::resolution, "R: images become R x R",
               opt::at_least(8))
        .field("min_side", &O::prepare, &P::min_side,
               "shorter side below this is too small (0: the resolution; no upscaling)",
               opt::at_least(0))
        .field("accept_greyscale", &O::prepare, &P::accept_greyscale,
               "convert grey-scale images (else listed as bad)")
        .field("accept_cmyk", &O::prepare, &P::accept_cmyk, "convert CMYK JPEGs (else listed as bad)")
        .field("shard_size", &O::prepare, &P::shard_size, "input records per shard", opt::at_least(1))
        .field("batch_size", &O::prepare, &P::batch_size, "images encoded together", opt::at_least(1));
    return s;
  }();
  return schema;
}

void run_prepare_latents(const Json& config, RunDirectory& dir, Report& report) {
  PrepareLatentsTaskOptions o = prepare_latents_schema().read(config);
  o.prepare.draw = o.latent == "mode" ? diffusion::PosteriorDraw::mode : diffusion::PosteriorDraw::sample;
  o.prepare.dtype = dtype_named(o.dtype);
  o.prepare.seed = config["seed"].get<uint64_t>();
  const auto inputs = diffusion::read_image_captions(o.data);
  diffusion::ComponentLoadOptions lo;
  lo.device = select_device(o.device);
  const auto text = diffusion::SdxlTextEncoders::load(o.pipeline, lo);
  const auto vae = diffusion::load_vae(fs::path(o.pipeline) / "vae", lo);
  const fs::path out = o.output.empty() ? dir.file("latents") : fs::path(o.output);
  const auto r = diffusion::prepare_latents(
      inputs, text, vae, out, o.prepare, dir.resuming(), [&](int64_t done, int64_t total) {
        spdlog::info("prepare_latents: shard {}/{}", done, total);
        dir.metrics().log(done, {{"chunks_done", static_cast<double>(done)},
                                 {"chunks", static_cast<double>(total)}});
      });
  std::vector<std::vector<std::string>> bad;
  for (const auto& b : r.bad) bad.push_back({"`" + b.path + "`", b.reason});
  report.heading("Latent shards").table(
      {"", ""},
      {{"inputs", "`" + o.data + "`: " + std::to_string(r.records) + " image-caption pairs"},
       {"written", std::to_string(r.written) + " samples, " + std::to_string(r.shards) +
                       (r.shards == 1 ? " shard" : " shards") + ", in `" + out.string() + "`" +
                       (r.resumed ? " (resumed)" : "")},
       {"bad", std::to_string(r.bad.size()) + " images skipped"},
       {"resolution", std::to_string(o.prepare.resolution) + " px, latents " + o.latent + ", " + o.dtype}});
  if (!bad.empty()) report.heading("Skipped images").table({"image", "reason"}, bad);
  report.paragraph("Train on them with `koala_kd`: `data=" + out.string() + "`.");
  if (!r.bad.empty()) {
    spdlog::warn("prepare_latents: {} of {} images skipped (listed in the report)", r.bad.size(), r.records);
  }
}

}  // namespace

std::string png_name(int64_t k) {
  char name[32];
  std::snprintf(name, sizeof(name), "%05lld.png", static_cast<long long>(k));
  return name;
}

std::vector<std::string> write_pngs(const at::Tensor& images, const fs::path& folder, int64_t first) {
  fs::create_directories(folder);
  std::vector<std::string> names;
  for (int64_t i = 0; i < images.size(0); ++i) {
    names.push_back(png_name(first + i));
    io::write_png(folder / names.back(), io::tensor_to_image(images[i]));
  }
  return names;
}

Task generate_images_task() {
  Task t;
  t.summary = "SDXL / KOALA text-to-image: prompts to PNG files and a contact sheet";
  t.schema = [] { return generate_images_schema().config_schema(); };
  t.run = run_generate_images;
  return t;
}

Task prepare_latents_task() {
  Task t;
  t.summary = "image-caption pairs to the latent shards koala_kd trains on (VAE + SDXL encoders)";
  t.schema = [] { return prepare_latents_schema().config_schema(); };
  t.run = run_prepare_latents;
  return t;
}

}  // namespace concord::tasks
