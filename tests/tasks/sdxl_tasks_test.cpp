// The SDXL pipeline tasks through run_task on the tiny pipeline fixture
// (scripts/fixtures/make_sdxl_pipeline_fixtures.py): generate_images writes one PNG per image
// equal to the library pipeline's output from the seed + k noise, whatever the batching, keeps
// finished images on --resume, and draws a contact sheet; prepare_latents turns the fixture's
// image-caption pairs into shards that koala_kd then trains a student on.
#include <gtest/gtest.h>

#include <filesystem>

#include <torch/torch.h>

#include "concord/core/config.h"
#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/io/image.h"
#include "concord/tasks/tasks.h"
#include "test_support.h"

namespace fs = std::filesystem;
using concord::Json;
using concord::tasks::run_task;

namespace {

fs::path pipeline_dir() { return concord::testing::fixture("diffusion") / "tiny-sdxl-pipeline"; }

std::string generate_config(int batch_size) {
  return R"({"task": "generate_images", "pipeline": ")" + pipeline_dir().string() + R"(",
    "prompts": ["a red fox in the snow", "Алматы таулары"], "images_per_prompt": 2,
    "steps": 3, "batch_size": )" + std::to_string(batch_size) + R"(, "sheet_cell": 64, "seed": 11})";
}

}  // namespace

TEST(SdxlTasks, GenerateImagesWritesThePipelinesImagesWhateverTheBatching) {
  concord::testing::TempDir tmp;
  const fs::path one = run_task(generate_config(1), {}, (tmp / "one").string());
  const fs::path three = run_task(generate_config(3), {}, (tmp / "three").string());
  auto pipe = concord::diffusion::SdxlPipeline::load(pipeline_dir());
  concord::diffusion::SdxlGenerateOptions g;
  g.num_inference_steps = 3;
  // Image 3 is the second image of prompt 2, from the noise of seed 11 + 3.
  const auto direct = pipe.generate({"Алматы таулары"}, g, pipe.initial_noise(1, 32, 32, 14));
  const auto want = concord::io::tensor_to_image(direct.images[0]);
  for (const fs::path& run : {one, three}) {
    for (int k = 0; k < 4; ++k) {
      EXPECT_TRUE(fs::exists(run / "images" / ("0000" + std::to_string(k) + ".png"))) << run;
    }
    EXPECT_EQ(concord::io::read_image(run / "images" / "00003.png").pixels, want.pixels) << run;
    const auto sheet = concord::io::read_image(run / "contact_sheet.png");
    EXPECT_GT(sheet.width, 2 * 64);
    EXPECT_EQ(concord::read_file(run / "images.jsonl").find("\"seed\":14") != std::string::npos, true);
  }
  // --resume keeps finished images: a planted file survives.
  const auto planted = concord::io::read_image(one / "images" / "00000.png");
  concord::io::write_png(one / "images" / "00001.png", planted);
  run_task(generate_config(2), {}, one.string(), /*resume=*/true);
  EXPECT_EQ(concord::io::read_image(one / "images" / "00001.png").pixels, planted.pixels);
  // Resuming with other settings would list old pictures under new ones: refused.
  EXPECT_THROW(run_task(generate_config(2), {"images_per_prompt=3"}, one.string(), true),
               concord::ConfigError);
  EXPECT_FALSE(concord::read_file(one / "metrics.jsonl").empty());
}

TEST(SdxlTasks, PrepareLatentsFeedsKoalaKd) {
  concord::testing::TempDir tmp;
  const auto prepare = concord::testing::fixture("diffusion") / "prepare";
  const fs::path run = run_task(R"({"task": "prepare_latents", "pipeline": ")" + pipeline_dir().string() +
                                    R"(", "data": ")" + (prepare / "captions.jsonl").string() +
                                    R"(", "resolution": 32, "shard_size": 4, "accept_greyscale": true})",
                                {}, (tmp / "prep").string());
  const std::string report = concord::read_file(run / "report.md");
  // Records 0-3 give the four good images (grey accepted); records 4-7 none, so no second shard.
  EXPECT_NE(report.find("4 samples, 1 shard,"), std::string::npos) << report;
  EXPECT_NE(report.find("cmyk_36x48.jpg"), std::string::npos) << report;
  const Json student = [] {
    Json s = concord::load_json_file(pipeline_dir() / "unet" / "config.json");
    s["layers_per_block"] = 1;
    s["transformer_layers_per_block"] = {1, 1, 1};
    s["mid_block_type"] = nullptr;
    return s;
  }();
  concord::testing::write_file(tmp / "student.json", student.dump());
  const fs::path kd = run_task(
      R"({"task": "koala_kd", "teacher": ")" + (pipeline_dir() / "unet").string() +
          R"(", "student": ")" + (tmp / "student.json").string() + R"(", "data": ")" +
          (run / "latents").string() + R"(", "batch_size": 2, "train": {"max_steps": 2, "progress": false}})",
      {}, (tmp / "kd").string());
  EXPECT_TRUE(fs::exists(kd / "student" / "diffusion_pytorch_model.safetensors"));
}
