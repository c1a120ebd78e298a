// Tasks `generate_images` and `prepare_latents` (SDXL's pipeline, concord/diffusion): prompts to
// PNG files and a contact sheet with any U-Net of SDXL's family, and image-caption pairs to the
// latent shards `koala_kd` trains on.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/tasks/tasks.h"

namespace concord::tasks {
Task generate_images_task();
Task prepare_latents_task();

/// "NNNNN.png": image k's file name in a run's images folder.
std::string png_name(int64_t k);

/// Writes `images` ([N, 3, H, W] in [0, 1]) as <folder>/NNNNN.png (numbered from `first`) and
/// returns the file names; the tasks and the quickstart's KOALA stage share it.
std::vector<std::string> write_pngs(const at::Tensor& images, const std::filesystem::path& folder,
                                    int64_t first);
}  // namespace concord::tasks
