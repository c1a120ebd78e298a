#include "concord/diffusion/schedulers.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "concord/core/error.h"
#include "config_fields.h"

namespace concord::diffusion {

DdpmSchedule::DdpmSchedule(DdpmOptions options) : options_(std::move(options)) {
  const int64_t T = options_.num_train_timesteps;
  CONCORD_CHECK(T >= 2, "DDPM: num_train_timesteps must be >= 2, got ", T);
  CONCORD_CHECK(options_.prediction_type == "epsilon" || options_.prediction_type == "v_prediction",
                "DDPM: prediction_type '", options_.prediction_type, "' (epsilon, v_prediction)");
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  if (options_.beta_schedule == "scaled_linear") {
    betas_ = at::linspace(std::sqrt(options_.beta_start), std::sqrt(options_.beta_end), T, f64).pow(2);
  } else if (options_.beta_schedule == "linear") {
    betas_ = at::linspace(options_.beta_start, options_.beta_end, T, f64);
  } else {
    fail("DDPM: beta_schedule '", options_.beta_schedule, "' (scaled_linear, linear)");
  }
  alphas_cumprod_ = (1.0 - betas_).cumprod(0);
}

std::pair<at::Tensor, at::Tensor> DdpmSchedule::coefficients(const at::Tensor& t,
                                                              const at::Tensor& like) const {
  CONCORD_CHECK(t.dim() == 1 && t.size(0) == like.size(0), "DDPM: timesteps must be [B] for a batch of ",
                like.size(0), ", got ", t.sizes());
  const at::Tensor tc = t.to(at::kLong).cpu();
  CONCORD_CHECK(tc.min().item<int64_t>() >= 0 && tc.max().item<int64_t>() < options_.num_train_timesteps,
                "DDPM: a timestep is outside [0, ", options_.num_train_timesteps, ")");
  const at::Tensor ac = alphas_cumprod_.index_select(0, tc);
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  auto as = [&](const at::Tensor& x) { return x.to(like.device()).to(like.scalar_type()).view(shape); };
  return {as(ac.sqrt()), as((1.0 - ac).sqrt())};
}

at::Tensor DdpmSchedule::add_noise(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const {
  auto [a, s] = coefficients(t, x0);
  return a * x0 + s * noise;
}

at::Tensor DdpmSchedule::velocity(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const {
  auto [a, s] = coefficients(t, x0);
  return a * noise - s * x0;
}

at::Tensor DdpmSchedule::target(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& t) const {
  return options_.prediction_type == "epsilon" ? noise : velocity(x0, noise, t);
}

EulerSampler::EulerSampler(EulerOptions options, int64_t n) : options_(std::move(options)) {
  const int64_t T = options_.training.num_train_timesteps;
  CONCORD_CHECK(n >= 1 && n <= T, "Euler: num_inference_steps must be in [1, ", T, "], got ", n);
  std::vector<double> ts;
  if (options_.timestep_spacing == "leading") {
    const int64_t ratio = T / n;
    for (int64_t i = n - 1; i >= 0; --i) ts.push_back(static_cast<double>(i * ratio + options_.steps_offset));
  } else if (options_.timestep_spacing == "trailing") {
    const double ratio = static_cast<double>(T) / static_cast<double>(n);
    // numpy's arange(T, 0, -T/n) has n entries; a running sum can drift past that (1000/3).
    for (int64_t i = 0; i < n; ++i) {
      ts.push_back(std::round(static_cast<double>(T) - static_cast<double>(i) * ratio) - 1.0);
    }
  } else if (options_.timestep_spacing == "linspace") {
    for (int64_t i = n - 1; i >= 0; --i) {
      ts.push_back(n == 1 ? 0.0 : static_cast<double>(T - 1) * static_cast<double>(i) / static_cast<double>(n - 1));
    }
  } else {
    fail("Euler: timestep_spacing '", options_.timestep_spacing, "' (leading, trailing, linspace)");
  }
  const DdpmSchedule schedule(options_.training);
  const at::Tensor ac = schedule.alphas_cumprod();
  const at::Tensor all = ((1.0 - ac) / ac).sqrt();  // sigma_t, t = 0 .. T-1
  std::vector<double> sig;
  for (double t : ts) {
    // Linear interpolation at t (integer timesteps hit the table exactly), holding the ends
    // beyond the table as diffusers' np.interp does: "leading" with steps_offset 1 and n = T
    // asks for t = T.
    const double tc = std::clamp(t, 0.0, static_cast<double>(T - 1));
    const auto lo = static_cast<int64_t>(std::floor(tc));
    const int64_t hi = std::min<int64_t>(lo + 1, T - 1);
    const double w = tc - static_cast<double>(lo);
    sig.push_back((1 - w) * all[lo].item<double>() + w * all[hi].item<double>());
  }
  sig.push_back(0.0);
  timesteps_ = at::tensor(ts, at::kDouble).to(at::kFloat);
  sigmas_ = at::tensor(sig, at::kDouble).to(at::kFloat);
}

double EulerSampler::init_noise_sigma() const {
  const double max_sigma = sigmas_.max().item<double>();
  return options_.timestep_spacing == "leading" ? std::sqrt(max_sigma * max_sigma + 1.0) : max_sigma;
}

at::Tensor EulerSampler::scale_model_input(const at::Tensor& sample, int64_t i) const {
  const double sigma = sigmas_[i].item<double>();
  return sample / std::sqrt(sigma * sigma + 1.0);
}

at::Tensor EulerSampler::step(const at::Tensor& out, int64_t i, const at::Tensor& sample) const {
  const double sigma = sigmas_[i].item<double>(), next = sigmas_[i + 1].item<double>();
  at::Tensor x0;
  if (options_.training.prediction_type == "epsilon") {
    x0 = sample - sigma * out;
  } else {
    x0 = out * (-sigma / std::sqrt(sigma * sigma + 1.0)) + sample / (sigma * sigma + 1.0);
  }
  const at::Tensor derivative = (sample - x0) / sigma;
  return sample + derivative * (next - sigma);
}

at::Tensor EulerSampler::sample(
    const at::Tensor& noise,
    const std::function<at::Tensor(const at::Tensor&, const at::Tensor&)>& predict) const {
  at::Tensor x = noise * init_noise_sigma();
  for (int64_t i = 0; i < timesteps_.size(0); ++i) {
    const at::Tensor t = timesteps_[i].expand({x.size(0)}).to(x.device());
    x = step(predict(scale_model_input(x, i), t), i, x);
  }
  return x;
}

EulerOptions euler_options_from_json(const Json& j, const std::string& source) {
  namespace cf = config_fields;
  if (!j.is_object()) fail_config(source, "expected a JSON object");
  const std::string cls = cf::value_or<std::string>(j, "_class_name", "EulerDiscreteScheduler", source);
  if (cls != "EulerDiscreteScheduler") {
    fail_config(source, "key '_class_name': '", cls,
                "' is not supported (EulerDiscreteScheduler, what SDXL ships)");
  }
  EulerOptions o;
  DdpmOptions& d = o.training;
  // Absent keys take EulerDiscreteScheduler's defaults, not SDXL's values.
  d.num_train_timesteps = cf::value_or<int64_t>(j, "num_train_timesteps", 1000, source);
  // The schedule is a [T] table: bounded, so a config cannot ask for 10^12 entries.
  cf::check_range(source, "num_train_timesteps", d.num_train_timesteps, 2, int64_t{1} << 20);
  d.beta_start = cf::value_or<double>(j, "beta_start", 0.0001, source);
  d.beta_end = cf::value_or<double>(j, "beta_end", 0.02, source);
  for (const auto& [key, beta] : {std::pair<const char*, double>{"beta_start", d.beta_start},
                                  {"beta_end", d.beta_end}}) {
    // Outside [0, 1) alpha_bar is not a product of probabilities: NaN sigmas, black images.
    if (!(beta >= 0.0 && beta < 1.0)) {
      fail_config(source, "key '", key, "' is ", beta, ", expected a number in [0, 1)");
    }
  }
  d.beta_schedule = cf::value_or<std::string>(j, "beta_schedule", "linear", source);
  if (d.beta_schedule != "scaled_linear" && d.beta_schedule != "linear") {
    fail_config(source, "key 'beta_schedule': '", d.beta_schedule,
                "' is not supported (scaled_linear, linear)");
  }
  d.prediction_type = cf::value_or<std::string>(j, "prediction_type", "epsilon", source);
  if (d.prediction_type != "epsilon" && d.prediction_type != "v_prediction") {
    fail_config(source, "key 'prediction_type': '", d.prediction_type,
                "' is not supported (epsilon, v_prediction)");
  }
  o.timestep_spacing = cf::value_or<std::string>(j, "timestep_spacing", "linspace", source);
  if (o.timestep_spacing != "leading" && o.timestep_spacing != "trailing" &&
      o.timestep_spacing != "linspace") {
    fail_config(source, "key 'timestep_spacing': '", o.timestep_spacing,
                "' is not supported (leading, trailing, linspace)");
  }
  o.steps_offset = cf::value_or<int64_t>(j, "steps_offset", 0, source);
  cf::check_range(source, "steps_offset", o.steps_offset, 0, d.num_train_timesteps - 1);
  cf::require_default(j, "interpolation_type", "linear", source);
  cf::require_default(j, "use_karras_sigmas", false, source);
  cf::require_default(j, "use_exponential_sigmas", false, source);
  cf::require_default(j, "use_beta_sigmas", false, source);
  cf::require_default(j, "rescale_betas_zero_snr", false, source);
  cf::require_default(j, "timestep_type", "discrete", source);
  cf::require_default(j, "final_sigmas_type", "zero", source);
  for (const char* key : {"trained_betas", "sigma_min", "sigma_max"}) {
    if (j.contains(key) && !j[key].is_null()) {
      fail_config(source, "key '", key, "' is not supported (must be null)");
    }
  }
  return o;
}

EulerOptions load_euler_options(const std::filesystem::path& path) {
  const auto file =
      std::filesystem::is_directory(path) ? path / "scheduler_config.json" : path;
  return euler_options_from_json(load_json_file(file), file.string());
}

at::Tensor guided(const at::Tensor& uncond, const at::Tensor& cond, double scale) {
  return uncond + scale * (cond - uncond);
}

}  // namespace concord::diffusion
