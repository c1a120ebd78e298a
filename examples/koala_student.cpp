// Cut a KOALA student from a diffusers U-Net and distil it, from C++.
//
//   build/examples/example_koala_student TEACHER_DIR STUDENT_CONFIG OUT_DIR [STEPS]
//
// What it shows: a diffusers UNet2DConditionModel folder loaded as it is (config.json +
// diffusion_pytorch_model.safetensors), a smaller student built from a config and initialised
// from the teacher's weights (diffusion::init_student_from_teacher: KOALA's layer-wise removal),
// synthetic conditional latents written as safetensors shards, KOALA's self-attention
// distillation through the generic Trainer, and the student saved as a diffusers folder.
// ci: @FIXTURES@/diffusion/tiny-sdxl @FIXTURES@/diffusion/tiny-koala/config.json @OUT@ 10
// ci-expect: output error to the teacher
#include <iostream>
#include <string>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/diffusion/distill.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/student.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/train/batch.h"
#include "concord/train/trainer.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: example_koala_student TEACHER_DIR STUDENT_CONFIG OUT_DIR [STEPS]\n";
    return 2;
  }
  try {
    concord::init_runtime();
    namespace diffusion = concord::diffusion;
    const std::string out = argv[3];
    const int64_t steps = argc > 4 ? std::stoll(argv[4]) : 50;
    torch::manual_seed(0);
    auto teacher = diffusion::load_unet(argv[1]);
    auto student = diffusion::init_student_from_teacher(teacher, diffusion::load_unet_config(argv[2]), argv[2]);
    std::cout << "teacher " << teacher->num_parameters() << " parameters, student "
              << student->num_parameters() << "\n";

    diffusion::SyntheticLatentOptions so;
    const auto spec = diffusion::latent_spec_for(teacher->config);
    so.samples = 32;
    so.samples_per_shard = 32;
    so.height = so.width = 8;  // small latents: the example runs in seconds
    so.text_dim = spec.text_dim;
    so.text_embed_dim = spec.text_embed_dim;
    const diffusion::LatentShards data(diffusion::write_synthetic_latents(out + "/latents", so), spec);

    diffusion::KoalaDistillation kd(teacher, student, {});  // self_attention feature map
    concord::train::TrainerOptions options;
    options.max_steps = steps;
    options.optimizer.lr = 1e-3;
    options.lr_schedule = "constant";
    concord::train::Trainer trainer({{"student", student.ptr()}}, options);
    concord::train::SampledBatches<diffusion::LatentShards, diffusion::LatentBatch> batches(data, {8, true, 1});
    torch::manual_seed(1);
    const double before = trainer.evaluate(kd, batches, 2).metrics.at("loss/output").value();
    trainer.fit(kd, batches);
    torch::manual_seed(1);
    const double after = trainer.evaluate(kd, batches, 2).metrics.at("loss/output").value();
    std::cout << "output error to the teacher " << before << " -> " << after << "\n";
    diffusion::save_unet(student, out + "/student");
    std::cout << "student saved in " << out << "/student (diffusers layout)\n";
    return after < before ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "example_koala_student: " << concord::one_line_message(e) << "\n";
    return 1;
  }
}
