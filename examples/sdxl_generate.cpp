// Text to image with a Stable Diffusion XL pipeline folder, from C++.
//
//   build/examples/example_sdxl_generate PIPELINE_DIR OUT_DIR [STEPS [DEVICE [UNET_DIR]]]
//
// What it shows: a diffusers StableDiffusionXLPipeline folder loaded as it is (model_index.json,
// tokenizer(_2)/, text_encoder(_2)/, unet/, vae/, scheduler/), optionally with another U-Net of
// SDXL's family in place of unet/ (KOALA-1B, KOALA-700M, a koala_kd student); three prompts
// sampled with Euler steps and classifier-free guidance from seeded noise; each image written as
// a PNG, and a contact sheet of them with their prompts. DEVICE is cpu (fp32, the default) or
// cuda (fp16 weights; the VAE decodes in fp32 when its config says force_upcast, as SDXL's does).
// docs/sdxl.md describes the pipeline.
// ci: @FIXTURES@/diffusion/tiny-sdxl-pipeline @OUT@ 4
// ci-expect: contact sheet
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/io/contact_sheet.h"
#include "concord/io/image.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: example_sdxl_generate PIPELINE_DIR OUT_DIR [STEPS [DEVICE [UNET_DIR]]]\n";
    return 2;
  }
  try {
    concord::init_runtime();
    namespace diffusion = concord::diffusion;
    namespace io = concord::io;
    const std::filesystem::path out = argv[2];

    diffusion::SdxlLoadOptions load;
    load.components.device = concord::select_device(argc > 4 ? argv[4] : "cpu");
    if (load.components.device->is_cuda()) load.components.dtype = at::kHalf;
    if (argc > 5) load.unet = argv[5];
    auto pipe = diffusion::SdxlPipeline::load(argv[1], load);

    const std::vector<std::string> prompts = {"a red fox in the snow",
                                              "İstanbul'da gün batımı, yağlı boya tablo",
                                              "a lighthouse at dawn, watercolor"};
    diffusion::SdxlGenerateOptions options;  // size: the U-Net's sample_size x the VAE's factor
    options.num_inference_steps = argc > 3 ? std::stoll(argv[3]) : 25;
    options.guidance_scale = 5.0;  // no negative prompt: zero negatives, as SDXL base's folder says
    options.seed = 42;
    std::cout << "U-Net " << pipe.unet()->num_parameters() << " parameters, "
              << options.num_inference_steps << " Euler steps, " << pipe.default_height() << "x"
              << pipe.default_height() << " pixels\n";
    const auto result = pipe.generate(prompts, options);

    std::filesystem::create_directories(out);
    std::vector<io::Image> images;
    for (size_t i = 0; i < prompts.size(); ++i) {
      images.push_back(io::tensor_to_image(result.images[static_cast<int64_t>(i)]));
      const auto file = out / ("image-" + std::to_string(i) + ".png");
      io::write_png(file, images.back());
      std::cout << file.string() << ": " << prompts[i] << "\n";
    }
    io::ContactSheetOptions sheet;
    sheet.columns = static_cast<int64_t>(prompts.size());
    sheet.cell_width = sheet.cell_height = 192;
    sheet.title = "seed 42, " + std::to_string(options.num_inference_steps) + " steps, guidance 5";
    const auto layout = io::write_contact_sheet(out / "contact_sheet.png", images, prompts, sheet);
    std::cout << "contact sheet " << layout.width << "x" << layout.height << ": "
              << (out / "contact_sheet.png").string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "example_sdxl_generate: " << concord::one_line_message(e) << "\n";
    return 1;
  }
}
