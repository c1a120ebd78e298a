#include "task_koala.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/options.h"
#include "concord/core/plot.h"
#include "concord/core/runtime.h"
#include "concord/core/statistics.h"
#include "concord/diffusion/distill.h"
#include "concord/diffusion/koala_experiment.h"
#include "concord/diffusion/sdxl_pipeline.h"
#include "concord/io/contact_sheet.h"
#include "concord/io/image.h"
#include "concord/text/byte_tokenizer.h"
#include "task_sdxl.h"
#include "concord/diffusion/latent_data.h"
#include "concord/diffusion/student.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/train/batch.h"
#include "concord/train/checkpoint.h"
#include "concord/train/trainer.h"
#include "metric_chart.h"

namespace concord::tasks {

namespace fs = std::filesystem;

namespace {

// ---- koala_kd -------------------------------------------------------------------------------

struct KoalaKdOptions {
  std::string teacher;
  std::string student;
  std::string data;
  int64_t synthetic_samples = 256;
  int64_t batch_size = 8;
  double ema_decay = 0.0;
  std::string prediction_type = "epsilon";
  std::string device = "cpu";
  std::string teacher_dtype = "float32";
  bool save_model = true;
  train::TrainerOptions train = [] {
    train::TrainerOptions t;
    t.optimizer.lr = 5e-5;  // KOALA's (and BK-SDM's) learning rate
    t.optimizer.weight_decay = 0.01;
    t.optimizer.beta2 = 0.999;  // diffusers' training scripts (the LM default is 0.95)
    t.lr_schedule = "constant";
    return t;
  }();
  // After `train`: declared before it, gcc 12 (-O2) warned that its string "may be used
  // uninitialized" on the path where the lambda above throws (a false positive).
  diffusion::DistillOptions distill;
};

const OptionsSchema<KoalaKdOptions>& koala_kd_schema() {
  static const OptionsSchema<KoalaKdOptions> schema = [] {
    OptionsSchema<KoalaKdOptions> s("koala_kd task");
    s.field("teacher", &KoalaKdOptions::teacher, "a diffusers U-Net folder (frozen)", opt::required())
        .field("student", &KoalaKdOptions::student,
               "a student U-Net config (cut from the teacher and initialised from its weights, "
               "e.g. configs/models/koala-700m.json) or a diffusers folder to continue from",
               opt::required())
        .field("data", &KoalaKdOptions::data,
               "a folder of latent shards (latents, encoder_hidden_states[, text_embeds, "
               "time_ids]) or 'synthetic' (written into the run folder)",
               opt::required())
        .field("synthetic_samples", &KoalaKdOptions::synthetic_samples,
               "samples of the synthetic data", opt::at_least(1))
        .field("batch_size", &KoalaKdOptions::batch_size, "latents per micro-batch", opt::at_least(1))
        .field("ema_decay", &KoalaKdOptions::ema_decay,
               "EMA of the student's weights after every step (0: off)", opt::at_least(0),
               opt::less_than(1))
        .field("prediction_type", &KoalaKdOptions::prediction_type, "epsilon or v_prediction",
               opt::one_of({"epsilon", "v_prediction"}))
        .field("device", &KoalaKdOptions::device, "cpu, cuda, cuda:N or auto")
        .field("teacher_dtype", &KoalaKdOptions::teacher_dtype,
               "dtype of the frozen teacher (bfloat16 halves its memory; the student stays fp32)",
               opt::one_of({"float32", "bfloat16"}))
        .field("save_model", &KoalaKdOptions::save_model,
               "write the student (and its EMA) to <run>/student as diffusers folders")
        .section("distill", &KoalaKdOptions::distill, diffusion::distill_options_schema(),
                 "the loss terms and the feature map")
        .section("train", &KoalaKdOptions::train, train::trainer_options_schema(), "optimisation");
    return s;
  }();
  return schema;
}

void run_koala_kd(const Json& config, RunDirectory& dir, Report& report) {
  const KoalaKdOptions o = koala_kd_schema().read(config);
  const c10::Device device = select_device(o.device);
  // The configs alone say whether the student is a cut of the teacher and whether the feature
  // map applies: checked before gigabytes of weights are read.
  if (!fs::is_directory(o.student)) {
    const auto teacher_config = diffusion::load_unet_config(o.teacher);
    const auto student_config = diffusion::load_unet_config(o.student);
    diffusion::student_layer_mapping(teacher_config, student_config, o.student);
    diffusion::feature_pairs(o.distill.feature_map, teacher_config, student_config, o.student);
  }
  diffusion::UNetLoadOptions lo;
  lo.device = device;
  diffusion::UNet2DCondition teacher = diffusion::load_unet(o.teacher, lo);
  diffusion::UNet2DCondition student =
      fs::is_directory(o.student)
          ? diffusion::load_unet(o.student, lo)
          : diffusion::init_student_from_teacher(teacher, diffusion::load_unet_config(o.student), o.student);
  const diffusion::LayerMapping mapping =
      diffusion::student_layer_mapping(teacher->config, student->config, o.student);
  if (o.teacher_dtype == "bfloat16") teacher->to(at::kBFloat16);  // after the student's copy
  student->train();
  std::string data = o.data;
  if (data == "synthetic") {
    diffusion::SyntheticLatentOptions so;
    so.samples = o.synthetic_samples;
    so.seed = config["seed"].get<uint64_t>();
    const auto spec = diffusion::latent_spec_for(teacher->config);
    so.channels = spec.channels;
    so.text_dim = spec.text_dim;
    so.sdxl_conditioning = spec.text_embed_dim > 0;
    if (so.sdxl_conditioning) so.text_embed_dim = spec.text_embed_dim;
    data = dir.file("data").string();
    if (!dir.resuming() || !fs::exists(data)) {
      fs::remove_all(data);
      diffusion::write_synthetic_latents(data, so);
    }
  }
  // Every shard is checked against the teacher before any step.
  const diffusion::LatentShards shards(data, diffusion::latent_spec_for(teacher->config));
  diffusion::DdpmOptions schedule;
  schedule.prediction_type = o.prediction_type;
  diffusion::KoalaDistillation objective(teacher, student, o.distill, schedule);

  std::vector<train::NamedModule> modules{{"student", student.ptr()}};
  diffusion::UNet2DCondition ema{nullptr};
  if (o.ema_decay > 0) {
    ema = diffusion::UNet2DCondition(std::dynamic_pointer_cast<diffusion::UNet2DConditionImpl>(student->clone()));
    for (auto& p : ema->parameters()) p.set_requires_grad(false);
    modules.emplace_back("student_ema", ema.ptr());
  }
  train::Trainer trainer(modules, o.train, {train::parameter_group({{"student", student.ptr()}})});
  if (ema) {
    const double decay = o.ema_decay;
    trainer.set_step_hook([&, decay](int64_t) {
      torch::NoGradGuard no_grad;
      auto from = student->parameters();
      auto to = ema->parameters();
      for (size_t i = 0; i < to.size(); ++i) to[i].mul_(decay).add_(from[i], 1.0 - decay);
    });
  }
  data::SamplerOptions sampling;
  sampling.batch_size = o.batch_size;
  sampling.seed = config["seed"].get<uint64_t>();
  train::SampledBatches<diffusion::LatentShards, diffusion::LatentBatch> batches(shards, sampling.for_this_process());
  if (dir.resuming()) {
    if (auto ckpt = train::latest_checkpoint(dir.file("checkpoints"))) {
      trainer.restore(*ckpt, batches);
      dir.drop_metrics_after(trainer.step());
    }
  }
  const auto result = trainer.fit(objective, batches, nullptr, &dir);
  if (o.save_model) {
    diffusion::save_unet(student, dir.file("student"));
    if (ema) diffusion::save_unet(ema, dir.file("student_ema"));
  }

  std::vector<std::vector<std::string>> map_rows, feature_rows;
  for (const auto& [s, t] : mapping.modules) map_rows.push_back({"`" + s + "`", "`" + t + "`"});
  for (const auto& p : objective.pairs()) feature_rows.push_back({"`" + p.student + "`", "`" + p.teacher + "`"});
  report.heading("Setup").table(
      {"", ""},
      {{"teacher", "`" + o.teacher + "` (" + std::to_string(teacher->num_parameters()) + " parameters)"},
       {"student", "`" + o.student + "` (" + std::to_string(student->num_parameters()) + " parameters)"},
       {"data", "`" + data + "`: " + std::to_string(shards.size()) + " latents"},
       {"loss", "l_task " + fixed(o.distill.task_weight, 2) + ", l_out " + fixed(o.distill.output_weight, 2) +
                    ", l_feat " + fixed(o.distill.feature_weight, 2) + " (" + o.distill.feature_map + ")"},
       {"steps", std::to_string(result.steps)},
       {"final loss", fixed(result.final_loss, 5)}});
  report.heading("Feature pairs (" + o.distill.feature_map + ")")
      .table({"student", "teacher"}, feature_rows);
  if (chart_metrics_together(dir, "loss_terms.png", "distillation loss terms", "step", "loss",
                             {"train/loss/task", "train/loss/output", "train/loss/feature"})) {
    report.image("loss terms", "charts/loss_terms.png");
  }
  report.heading("Student layers and the teacher layers they start from")
      .table({"student module", "teacher module"}, map_rows);
}

// ---- koala_experiment -----------------------------------------------------------------------


// Runs the experiment into `dir`, writes results.json, the table and the chart; returns a
// one-line summary.
std::string report_koala_experiment(const diffusion::KoalaExperimentOptions& o, RunDirectory& dir,
                                    Report& report,
                                    decltype(diffusion::KoalaCallbacks::trained) trained = {}) {
  int64_t record = 0;
  diffusion::KoalaCallbacks callbacks;
  callbacks.trained = std::move(trained);
  callbacks.progress = [](int64_t seed, const std::string& stage, const std::string& detail) {
    spdlog::info("koala seed {}: {}: {}", seed, stage, detail);
  };
  callbacks.metrics = [&](const Json& r) {
    Json copy = r;
    copy["step"] = ++record;
    dir.metrics().log_json(copy);
  };
  const Json results = diffusion::run_koala_experiment(o, dir.file("work"), callbacks);
  fs::remove_all(dir.file("work"));
  write_file_atomic(dir.file("results.json"), results.dump(2) + "\n");
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> labels;
  std::vector<double> values, half_widths;
  for (const auto& map : o.feature_maps) {
    const SeedSummary mse = seed_summary_from_json(results[map]["output_mse"]);
    std::string per;
    for (double v : mse.values) per += (per.empty() ? "" : " / ") + fixed(v, 5);
    rows.push_back({map, with_interval(mse, 5), with_interval(seed_summary_from_json(results[map]["denoise_loss"]), 5), per});
    labels.push_back(map);
    values.push_back(mse.mean);
    half_widths.push_back(mse.has_interval ? mse.ci_high - mse.mean : 0.0);
  }
  // Every map against KOALA's choice, or against no feature term when that is not run.
  const auto has = [&](const std::string& m) {
    return std::find(o.feature_maps.begin(), o.feature_maps.end(), m) != o.feature_maps.end();
  };
  const std::string baseline = has("self_attention") ? "self_attention" : has("output_only") ? "output_only" : "";
  std::vector<std::string> verdicts;
  if (!baseline.empty()) {
    const SeedSummary base = seed_summary_from_json(results[baseline]["output_mse"]);
    for (const auto& map : o.feature_maps) {
      if (map == baseline) continue;
      const SeedSummary mse = seed_summary_from_json(results[map]["output_mse"]);
      verdicts.push_back("output MSE: " + describe_difference(map, baseline, difference_of_means(mse, base), 5) +
                         paired_by_seed_clause(mse, base, 5));
    }
  }
  const SeedSummary teacher_loss = seed_summary_from_json(results["teacher"]["denoise_loss"]);
  ChartSpec spec;
  spec.title = "student-teacher output MSE on held-out latents (mean, 95% interval; lower is better)";
  spec.x_label = "feature map";
  spec.y_label = "output MSE";
  plot_bars(dir.chart("output_mse.png"), spec, labels, values, half_widths);
  report.heading("Feature maps compared")
      .paragraph("A teacher (" + std::to_string(diffusion::count_unet_parameters(
                                     diffusion::koala_experiment_teacher_config(o))) +
                 " parameters) trained on synthetic conditional latents; a KOALA-style student (" +
                 std::to_string(diffusion::count_unet_parameters(diffusion::koala_experiment_student_config(o))) +
                 " parameters: one ResNet per down block, depth-1 transformers, no mid block) cut "
                 "from it and distilled with each feature map for " + std::to_string(o.distill_steps) +
                 " steps, same data order. Held-out: output MSE to the teacher and the denoising "
                 "loss, at fixed noise and timesteps; the teacher's own denoising loss is " +
                 with_interval(teacher_loss, 5) + ". Each figure: the mean over " +
                 std::to_string(o.seeds.size()) + " seed(s) and, from two seeds, its 95% "
                 "Student-t interval [low, high].")
      .table({"feature map", "output MSE", "denoising loss", "output MSE per seed"}, rows);
  if (!verdicts.empty()) {
    report.paragraph("Each feature map against `" + baseline + "` on output MSE: the difference "
                     "of the means with Welch's 95% interval, which treats the seeds as "
                     "independent samples, and the mean per-seed difference with its Student-t "
                     "interval (a seed's students share its data and teacher). A difference is "
                     "significant when its interval excludes 0.");
    for (const auto& v : verdicts) report.bullet(v);
  }
  report.image("output MSE by feature map", "charts/output_mse.png")
      .paragraph("All values: [results.json](results.json).");
  std::string summary = fmt::format("held-out output MSE to the teacher over {} seed(s), lower is better:",
                                    o.seeds.size());
  for (size_t i = 0; i < labels.size(); ++i) summary += " " + labels[i] + " " + fixed(values[i], 4);
  if (has("output_only") && has("self_attention")) {
    const SeedSummary sa = seed_summary_from_json(results["self_attention"]["output_mse"]);
    const SeedSummary out = seed_summary_from_json(results["output_only"]["output_mse"]);
    if (sa.values.size() >= 2 && sa.seeds == out.seeds) {
      summary += "; " + describe_difference("self_attention", "output_only", paired_difference(sa, out), 4);
    }
  }
  return summary;
}

void run_koala_experiment_task(const Json& config, RunDirectory& dir, Report& report) {
  report_koala_experiment(diffusion::koala_experiment_options_schema().read(config), dir, report);
}

// The quickstart's picture: the experiment's teacher and its self-attention-KD student sample the
// same prompts from the same noise through an SDXL pipeline around them. The experiment trains on
// synthetic latents with random "text" states, so the text encoders and the VAE here are random
// too, sized to the teacher (byte tokenizers, two 2-layer CLIP encoders whose widths add up to
// its cross_attention_dim, a two-level VAE): the images show no object, but every step of
// prompt -> tokens -> encoders -> guided Euler sampling -> VAE -> PNG runs.
std::string sample_teacher_and_student(diffusion::UNet2DCondition teacher,
                                       diffusion::UNet2DCondition student, RunDirectory& dir,
                                       Report& report, bool quick) {
  torch::manual_seed(2024);
  const diffusion::UNetConfig& u = teacher->config;
  auto clip = [&](int64_t hidden, int64_t projection) {
    diffusion::ClipTextConfig c;
    c.vocab_size = text::ByteTokenizer().vocab_size();
    c.hidden_size = hidden;
    c.intermediate_size = 2 * hidden;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.hidden_act = "gelu";
    c.eos_token_id = text::ByteTokenizer::kEndOfText;
    c.projection_dim = projection;
    diffusion::ClipTextModel m(c);
    m->eval();
    return m;
  };
  const int64_t first = u.cross_attention_dim / 2;
  const int64_t pooled = u.projection_class_embeddings_input_dim - 6 * u.addition_time_embed_dim;
  diffusion::SdxlTextEncoders text(std::make_shared<text::ByteTokenizer>(), clip(first, 0),
                                   std::make_shared<text::ByteTokenizer>(),
                                   clip(u.cross_attention_dim - first, pooled));
  diffusion::AutoencoderKLConfig vc;
  vc.down_block_types.assign(2, "DownEncoderBlock2D");
  vc.up_block_types.assign(2, "UpDecoderBlock2D");
  vc.block_out_channels = {16, 32};
  vc.norm_num_groups = 8;
  vc.latent_channels = u.in_channels;
  vc.scaling_factor = 0.13025;
  diffusion::AutoencoderKL vae(vc);
  vae->eval();
  diffusion::SdxlPipeline pipe(std::move(text), teacher, vae, diffusion::EulerOptions{});
  const std::vector<std::string> prompts = {"a red fox in the snow", "İstanbul'da bir kedi",
                                            "a lighthouse at dawn"};
  diffusion::SdxlGenerateOptions g;
  g.num_inference_steps = quick ? 4 : 20;
  g.height = g.width = u.sample_size * pipe.vae_scale_factor();
  const at::Tensor noise = pipe.initial_noise(static_cast<int64_t>(prompts.size()), g.height, g.width, 7);
  const at::Tensor from_teacher = pipe.generate(prompts, g, noise).images;
  pipe.set_unet(student);
  const at::Tensor from_student = pipe.generate(prompts, g, noise).images;
  const auto names = write_pngs(at::cat({from_teacher, from_student}), dir.file("samples"), 0);
  std::vector<io::Image> images;
  std::vector<std::string> captions;
  for (size_t i = 0; i < names.size(); ++i) {
    images.push_back(io::read_image(dir.file("samples") / names[i]));
    captions.push_back((i < prompts.size() ? "teacher: " : "student: ") + prompts[i % prompts.size()]);
  }
  io::ContactSheetOptions so;
  so.columns = static_cast<int64_t>(prompts.size());
  so.cell_width = so.cell_height = 128;
  so.title = "teacher above, KD student below";
  io::write_contact_sheet(dir.file("contact_sheet.png"), images, captions, so);
  const double gap = (from_teacher - from_student).abs().mean().item<double>();
  report.heading("Samples")
      .paragraph("The teacher and its self-attention-KD student through an SDXL pipeline (" +
                 std::to_string(g.num_inference_steps) + " Euler steps, guidance 5, the same "
                 "initial noise) with random byte-level CLIP encoders and a random VAE sized to "
                 "them: the training data is synthetic, so the pictures show no object; they "
                 "show that every step runs. Mean absolute pixel difference student - teacher: " +
                 fixed(gap, 4) + ".")
      .image("teacher and student samples", "contact_sheet.png");
  return "contact sheet " + dir.file("contact_sheet.png").string();
}

}  // namespace

Stage koala_stage(QuickstartSize size) {
  Stage s;
  s.name = "koala";
  s.what = "KOALA: a tiny U-Net teacher distilled into a smaller student, with and without "
           "self-attention feature KD";
  s.shows = "whether matching the teacher's self-attention features (KOALA's choice) brings the "
            "student's output closer to the teacher's than output distillation alone";
  s.run = [size](RunDirectory& dir) {
    const bool quick = size == QuickstartSize::smoke;
    diffusion::KoalaExperimentOptions o;
    o.seeds = size == QuickstartSize::full ? std::vector<int64_t>{1, 2, 3}
              : quick                      ? std::vector<int64_t>{1}
                                           : std::vector<int64_t>{1, 2};
    o.feature_maps = {"output_only", "self_attention"};
    if (quick) {
      o.train_samples = 64;
      o.heldout_samples = 16;
      o.teacher_steps = 30;
      o.distill_steps = 20;
    }
    dir.write_config(diffusion::koala_experiment_options_schema().to_json(o));
    Report report("quickstart: koala");
    diffusion::UNet2DCondition teacher{nullptr}, student{nullptr};
    const std::string summary = report_koala_experiment(
        o, dir, report,
        [&](int64_t seed, const std::string& map, diffusion::UNet2DCondition t,
            diffusion::UNet2DCondition s) {
          if (seed == o.seeds.front() && map == "self_attention") {
            teacher = t;
            student = s;
          }
        });
    const std::string sheet = sample_teacher_and_student(teacher, student, dir, report, quick);
    report.write(dir.file("report.md"));
    return summary + "; " + sheet;
  };
  return s;
}

Task koala_kd_task() {
  Task t;
  t.summary = "KOALA self-attention distillation of a U-Net into a student cut from it";
  t.schema = [] { return koala_kd_schema().config_schema(); };
  t.run = run_koala_kd;
  return t;
}

Task koala_experiment_task() {
  Task t;
  t.summary = "KOALA in miniature: which feature map distils the best student";
  t.schema = [] { return diffusion::koala_experiment_options_schema().config_schema(); };
  t.run = run_koala_experiment_task;
  return t;
}

}  // namespace concord::tasks
