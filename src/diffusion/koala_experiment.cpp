#include "concord/diffusion/koala_experiment.h"

#include <torch/torch.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "concord/core/error.h"
#include "concord/core/statistics.h"
#include "concord/diffusion/distill.h"
#include "concord/diffusion/student.h"
#include "concord/train/batch.h"
#include "concord/train/trainer.h"

namespace concord::diffusion {

const OptionsSchema<KoalaExperimentOptions>& koala_experiment_options_schema() {
  static const OptionsSchema<KoalaExperimentOptions> schema = [] {
    OptionsSchema<KoalaExperimentOptions> s("koala_experiment");
    s.field("seeds", &KoalaExperimentOptions::seeds, "one whole study per seed")
        .field("train_samples", &KoalaExperimentOptions::train_samples, "synthetic training latents",
               opt::at_least(8))
        .field("heldout_samples", &KoalaExperimentOptions::heldout_samples,
               "held-out latents the students are scored on", opt::at_least(1))
        .field("latent_size", &KoalaExperimentOptions::latent_size, "H = W of the latents",
               opt::at_least(8))
        .field("classes", &KoalaExperimentOptions::classes, "prompt classes of the synthetic data",
               opt::at_least(1))
        .field("block_out_channels", &KoalaExperimentOptions::block_out_channels,
               "the teacher's widths (three levels, multiples of 8; one head per 32 channels)")
        .field("teacher_steps", &KoalaExperimentOptions::teacher_steps, "the teacher's training steps",
               opt::at_least(1))
        .field("distill_steps", &KoalaExperimentOptions::distill_steps,
               "distillation steps of every student", opt::at_least(1))
        .field("batch_size", &KoalaExperimentOptions::batch_size, "latents per step", opt::at_least(1))
        .field("lr", &KoalaExperimentOptions::lr, "learning rate of teacher and students",
               opt::greater_than(0))
        .field("feature_maps", &KoalaExperimentOptions::feature_maps,
               "feature maps to compare (output_only: no feature term)")
        .field("feature_weight", &KoalaExperimentOptions::feature_weight, "l_feat",
               opt::at_least(0));
    return s;
  }();
  return schema;
}

UNetConfig koala_experiment_teacher_config(const KoalaExperimentOptions& o) {
  CONCORD_CHECK(o.block_out_channels.size() == 3, "koala_experiment: block_out_channels needs 3 widths");
  UNetConfig c;
  c.sample_size = o.latent_size;
  c.down_block_types = {"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"};
  c.up_block_types = {"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"};
  c.block_out_channels = o.block_out_channels;
  c.layers_per_block = {2, 2, 2};
  c.transformer_layers_per_block = {1, 1, 2};
  c.reverse_transformer_layers_per_block = {2, 1, 1};
  c.num_attention_heads.clear();
  for (int64_t w : o.block_out_channels) c.num_attention_heads.push_back(std::max<int64_t>(1, w / 32));
  c.cross_attention_dim = 32;
  c.norm_num_groups = 8;
  c.addition_embed_type = "text_time";
  c.addition_time_embed_dim = 8;
  c.projection_class_embeddings_input_dim = 16 + 6 * 8;
  c.validate("koala_experiment teacher");
  return c;
}

UNetConfig koala_experiment_student_config(const KoalaExperimentOptions& o) {
  UNetConfig c = koala_experiment_teacher_config(o);
  c.layers_per_block = {1, 1, 1};
  c.transformer_layers_per_block = {1, 1, 1};
  c.reverse_transformer_layers_per_block = {1, 1, 1};
  c.mid_block_type = "";  // KOALA-700M-style: no mid block
  return c;
}

namespace {

train::TrainerOptions adam(double lr, int64_t steps) {
  train::TrainerOptions t;
  t.max_steps = steps;
  t.optimizer.lr = lr;
  t.optimizer.weight_decay = 0.0;
  t.lr_schedule = "cosine";
  t.warmup_steps = std::min<int64_t>(20, steps / 10);
  t.progress = false;
  return t;
}

struct HeldOut {
  double output_mse = 0, denoise_loss = 0;
};

// Both errors on the held-out latents at noise and timesteps drawn from `seed` (the same for
// every student).
HeldOut evaluate(UNet2DCondition teacher, UNet2DCondition student, const LatentShards& data,
                 int64_t batch, uint64_t seed) {
  torch::NoGradGuard no_grad;
  teacher->eval();
  student->eval();
  const DdpmSchedule schedule;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  HeldOut h;
  double n = 0;
  for (int64_t start = 0; start < data.size(); start += batch) {
    std::vector<int64_t> idx;
    for (int64_t i = start; i < std::min(data.size(), start + batch); ++i) idx.push_back(i);
    const LatentBatch b = data.get_batch(idx);
    const int64_t B = b.latents.size(0);
    const at::Tensor t = at::randint(0, schedule.options().num_train_timesteps, {B}, gen, at::TensorOptions().dtype(at::kLong));
    const at::Tensor noise = at::randn(b.latents.sizes(), gen, at::TensorOptions().dtype(at::kFloat));
    const at::Tensor xt = schedule.add_noise(b.latents, noise, t);
    const UNetInputs in = unet_inputs(b, xt, t);
    const at::Tensor eps_t = teacher->forward(in), eps_s = student->forward(in);
    h.output_mse += (eps_s - eps_t).pow(2).mean().item<double>() * static_cast<double>(B);
    h.denoise_loss += (eps_s - noise).pow(2).mean().item<double>() * static_cast<double>(B);
    n += static_cast<double>(B);
  }
  h.output_mse /= n;
  h.denoise_loss /= n;
  return h;
}

// {mean, stddev, ci_low, ci_high, seeds, per_seed: [values]}
nlohmann::json over_seeds(const std::vector<double>& v, const std::vector<int64_t>& seeds) {
  return summarize_over_seeds(v, std::vector<uint64_t>(seeds.begin(), seeds.end())).to_json();
}

}  // namespace

nlohmann::json run_koala_experiment(const KoalaExperimentOptions& o,
                                    const std::filesystem::path& work_dir,
                                    const KoalaCallbacks& callbacks) {
  koala_experiment_options_schema().validate(o, "koala_experiment");
  CONCORD_CHECK(!o.seeds.empty(), "koala_experiment: no seeds");
  for (size_t i = 0; i < o.feature_maps.size(); ++i) {
    CONCORD_CHECK(std::find(o.feature_maps.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                            o.feature_maps.end(), o.feature_maps[i]) == o.feature_maps.end(),
                  "koala_experiment: feature map '", o.feature_maps[i], "' is listed twice");
  }
  for (const auto& m : o.feature_maps) {
    if (m == "output_only") continue;
    const auto names = feature_map_names();
    if (std::find(names.begin(), names.end(), m) == names.end()) {
      (void)feature_pairs(m, UNetConfig{}, UNetConfig{});  // throws, listing the valid names
    }
  }
  auto progress = [&](int64_t seed, const std::string& stage, const std::string& detail) {
    if (callbacks.progress) callbacks.progress(seed, stage, detail);
  };
  const UNetConfig teacher_config = koala_experiment_teacher_config(o);
  const UNetConfig student_config = koala_experiment_student_config(o);
  std::map<std::string, std::vector<double>> output_mse, denoise;
  std::vector<double> teacher_loss;
  for (int64_t seed : o.seeds) {
    const auto s = static_cast<uint64_t>(seed);
    SyntheticLatentOptions so;
    so.samples = o.train_samples + o.heldout_samples;
    so.height = so.width = o.latent_size;
    so.classes = o.classes;
    so.samples_per_shard = o.train_samples;  // shard 0: training, shard 1: held out
    so.seed = s;
    const auto dir = work_dir / ("data-seed" + std::to_string(seed));
    std::filesystem::remove_all(dir);
    const auto files = write_synthetic_latents(dir, so);
    CONCORD_CHECK(files.size() == 2, "koala_experiment: expected a training and a held-out shard");
    const LatentShards train_set(std::vector<std::filesystem::path>{files[0]}, latent_spec_for(teacher_config));
    const LatentShards heldout(std::vector<std::filesystem::path>{files[1]}, latent_spec_for(teacher_config));

    torch::manual_seed(s);
    UNet2DCondition teacher(teacher_config);
    {
      DenoisingObjective objective(teacher);
      data::SamplerOptions sampling;
      sampling.batch_size = o.batch_size;
      sampling.seed = s;
      train::SampledBatches<LatentShards, LatentBatch> batches(train_set, sampling);
      train::Trainer trainer({{"teacher", teacher.ptr()}}, adam(o.lr, o.teacher_steps));
      const auto r = trainer.fit(objective, batches);
      progress(seed, "teacher", "denoising loss " + std::to_string(r.final_loss));
    }
    teacher->eval();
    const HeldOut t_eval = evaluate(teacher, teacher, heldout, o.batch_size, s + 99);
    teacher_loss.push_back(t_eval.denoise_loss);

    for (const auto& map : o.feature_maps) {
      torch::manual_seed(s + 7);
      UNet2DCondition student = init_student_from_teacher(teacher, student_config);
      DistillOptions d;
      d.feature_map = map == "output_only" ? "self_attention" : map;
      d.feature_weight = map == "output_only" ? 0.0 : o.feature_weight;
      KoalaDistillation objective(teacher, student, d);
      data::SamplerOptions sampling;
      sampling.batch_size = o.batch_size;
      sampling.seed = s;  // every student sees the same batches
      train::SampledBatches<LatentShards, LatentBatch> batches(train_set, sampling);
      train::Trainer trainer({{"student", student.ptr()}}, adam(o.lr, o.distill_steps));
      for (int64_t step = 1; step <= o.distill_steps; ++step) {
        const train::StepStats st = trainer.train_step(objective, std::vector<LatentBatch>{batches.next()});
        if (callbacks.metrics) {
          nlohmann::json record = {{"seed", seed}, {"feature_map", map}, {"kd_step", step},
                                   {"train/loss", st.loss}};
          for (const auto& [name, m] : st.metrics) record["train/" + name] = m.value();
          callbacks.metrics(record);
        }
      }
      const HeldOut h = evaluate(teacher, student, heldout, o.batch_size, s + 99);
      if (callbacks.trained) {
        student->eval();
        callbacks.trained(seed, map, teacher, student);
      }
      output_mse[map].push_back(h.output_mse);
      denoise[map].push_back(h.denoise_loss);
      progress(seed, "distill:" + map, "output mse " + std::to_string(h.output_mse) +
                                           ", denoise loss " + std::to_string(h.denoise_loss));
    }
  }
  nlohmann::json out;
  out["teacher"] = {{"denoise_loss", over_seeds(teacher_loss, o.seeds)}};
  for (const auto& map : o.feature_maps) {
    out[map] = {{"output_mse", over_seeds(output_mse[map], o.seeds)},
                {"denoise_loss", over_seeds(denoise[map], o.seeds)}};
  }
  out["config"] = koala_experiment_options_schema().to_json(o);
  return out;
}

}  // namespace concord::diffusion
