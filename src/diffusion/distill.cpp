#include "concord/diffusion/distill.h"

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/feature_capture.h"

namespace concord::diffusion {

const OptionsSchema<DistillOptions>& distill_options_schema() {
  static const OptionsSchema<DistillOptions> schema = [] {
    OptionsSchema<DistillOptions> s("distillation");
    s.field("task_weight", &DistillOptions::task_weight, "l_task: the denoising loss", opt::at_least(0))
        .field("output_weight", &DistillOptions::output_weight, "l_out: student vs teacher output",
               opt::at_least(0))
        .field("feature_weight", &DistillOptions::feature_weight, "l_feat: the feature maps",
               opt::at_least(0))
        .field("feature_map", &DistillOptions::feature_map,
               "self_attention (KOALA), cross_attention, feed_forward, resnet, last_feature (BK-SDM)");
    return s;
  }();
  return schema;
}

UNetInputs unet_inputs(const LatentBatch& b, const at::Tensor& sample, const at::Tensor& t) {
  UNetInputs in;
  in.sample = sample;
  in.timesteps = t;
  in.encoder_hidden_states = b.encoder_hidden_states.to(sample.device());
  if (b.text_embeds.defined()) in.text_embeds = b.text_embeds.to(sample.device());
  if (b.time_ids.defined()) in.time_ids = b.time_ids.to(sample.device());
  return in;
}

namespace {

// x_0 on the model's device, t ~ U{0, T-1} and eps ~ N(0, I) from the global generator (the
// Trainer saves and restores it, so a resumed run draws the same).
struct Noised {
  at::Tensor x0, noise, t, xt;
};

Noised noise_batch(const LatentBatch& b, const DdpmSchedule& s, const at::Tensor& like) {
  Noised n;
  n.x0 = b.latents.to(like.device()).to(like.scalar_type());
  const int64_t B = n.x0.size(0);
  n.t = at::randint(0, s.options().num_train_timesteps, {B}, at::TensorOptions().dtype(at::kLong));
  n.noise = at::randn(n.x0.sizes(), at::TensorOptions().dtype(at::kFloat)).to(n.x0.device(), n.x0.scalar_type());
  n.t = n.t.to(n.x0.device());
  n.xt = s.add_noise(n.x0, n.noise, n.t);
  return n;
}

}  // namespace

KoalaDistillation::KoalaDistillation(UNet2DCondition teacher, UNet2DCondition student,
                                     DistillOptions options, DdpmOptions schedule)
    : teacher_(std::move(teacher)),
      student_(std::move(student)),
      options_(std::move(options)),
      schedule_(std::move(schedule)) {
  distill_options_schema().validate(options_, "distillation");
  pairs_ = feature_pairs(options_.feature_map, teacher_->config, student_->config);
  // Resolve every path now: an unknown one fails here, naming it, before any step.
  std::vector<std::string> s, t;
  for (const auto& p : pairs_) {
    s.push_back(p.student);
    t.push_back(p.teacher);
  }
  nn::FeatureCapture check_s(*student_, s);
  nn::FeatureCapture check_t(*teacher_, t);
  teacher_->eval();
  for (auto& p : teacher_->parameters()) p.set_requires_grad(false);
}

train::LossSum KoalaDistillation::loss(const LatentBatch& b) {
  const Noised n = noise_batch(b, schedule_, student_->conv_in->weight);
  const UNetInputs in = unet_inputs(b, n.xt, n.t);
  std::vector<std::string> s_paths, t_paths;
  // Without a feature term the features are not captured at all.
  if (options_.feature_weight > 0) {
    for (const auto& p : pairs_) {
      s_paths.push_back(p.student);
      t_paths.push_back(p.teacher);
    }
  }
  at::Tensor eps_t;
  std::vector<at::Tensor> f_t;
  {
    torch::NoGradGuard no_grad;
    // A teacher kept in another dtype (bf16 to save memory) gets its inputs in that dtype.
    const at::ScalarType tdtype = teacher_->conv_in->weight.scalar_type();
    UNetInputs tin = in;
    tin.sample = in.sample.to(tdtype);
    tin.encoder_hidden_states = in.encoder_hidden_states.to(tdtype);
    if (in.text_embeds.defined()) tin.text_embeds = in.text_embeds.to(tdtype);
    nn::FeatureCapture capture(*teacher_, nn::FeatureCaptureOptions(t_paths).detach(true));
    eps_t = teacher_->forward(tin);
    for (const auto& path : t_paths) f_t.push_back(capture.get(path));
  }
  nn::FeatureCapture capture(*student_, s_paths);
  const at::Tensor eps_s = student_->forward(in);
  const double B = static_cast<double>(b.latents.size(0));
  const at::Tensor task = at::mse_loss(eps_s.to(at::kFloat), schedule_.target(n.x0, n.noise, n.t).to(at::kFloat));
  const at::Tensor output = at::mse_loss(eps_s.to(at::kFloat), eps_t.to(at::kFloat));
  at::Tensor feature = at::zeros({}, task.options());
  for (size_t i = 0; i < s_paths.size(); ++i) {
    const at::Tensor fs = capture.get(s_paths[i]);
    CONCORD_CHECK(fs.sizes() == f_t[i].sizes(), "distillation: feature '", s_paths[i], "' ",
                  fs.sizes(), " does not match the teacher's '", t_paths[i], "' ", f_t[i].sizes());
    feature = feature + at::mse_loss(fs.to(at::kFloat), f_t[i].to(at::kFloat));
  }
  train::LossSum out;
  // Per-latent means times the batch: the Trainer divides by count() = B.
  out.sum = B * (options_.task_weight * task + options_.output_weight * output +
                 options_.feature_weight * feature);
  out.metrics["loss/task"] = {B * task.item<double>(), B};
  out.metrics["loss/output"] = {B * output.item<double>(), B};
  out.metrics["loss/feature"] = {B * feature.item<double>(), B};
  return out;
}

DenoisingObjective::DenoisingObjective(UNet2DCondition model, DdpmOptions schedule)
    : model_(std::move(model)), schedule_(std::move(schedule)) {}

train::LossSum DenoisingObjective::loss(const LatentBatch& b) {
  const Noised n = noise_batch(b, schedule_, model_->conv_in->weight);
  const at::Tensor pred = model_->forward(unet_inputs(b, n.xt, n.t));
  const at::Tensor mse = at::mse_loss(pred.to(at::kFloat), schedule_.target(n.x0, n.noise, n.t).to(at::kFloat));
  const double B = static_cast<double>(b.latents.size(0));
  train::LossSum out;
  out.sum = B * mse;
  out.metrics["loss/task"] = {B * mse.item<double>(), B};
  return out;
}

}  // namespace concord::diffusion
