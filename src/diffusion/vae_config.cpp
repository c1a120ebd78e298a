#include "concord/diffusion/vae_config.h"

#include <type_traits>

#include "concord/core/error.h"
#include "config_fields.h"

namespace concord::diffusion {

namespace {

// null, or a list of numbers.
std::optional<std::vector<double>> optional_numbers(const Json& j, const char* key,
                                                    const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_array()) fail_config(source, "key '", key, "' must be null or a list of numbers");
  std::vector<double> out;
  for (const auto& x : *it) {
    if (!x.is_number()) fail_config(source, "key '", key, "' must be null or a list of numbers");
    out.push_back(x.get<double>());
  }
  return out;
}

template <typename T>
std::vector<T> list_of(const Json& j, const char* key, std::vector<T> fallback,
                       const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  try {
    return it->get<std::vector<T>>();
  } catch (const std::exception&) {
    fail_config(source, "key '", key, "' must be a list of ",
                std::is_same_v<T, std::string> ? "strings" : "integers");
  }
}

}  // namespace

using config_fields::value_or;

void AutoencoderKLConfig::validate(const std::string& source) const {
  const size_t n = block_out_channels.size();
  if (n == 0) fail_config(source, "key 'block_out_channels' is empty");
  auto need = [&](size_t size, const char* what) {
    if (size != n) {
      fail_config(source, "key '", what, "' has ", size, " entries for ", n, " block_out_channels");
    }
  };
  need(down_block_types.size(), "down_block_types");
  need(up_block_types.size(), "up_block_types");
  for (const auto& t : down_block_types) {
    if (t != "DownEncoderBlock2D") {
      fail_config(source, "key 'down_block_types': '", t, "' is not supported (DownEncoderBlock2D)");
    }
  }
  for (const auto& t : up_block_types) {
    if (t != "UpDecoderBlock2D") {
      fail_config(source, "key 'up_block_types': '", t, "' is not supported (UpDecoderBlock2D)");
    }
  }
  if (act_fn != "silu") fail_config(source, "key 'act_fn': '", act_fn, "' is not supported (silu)");
  if (norm_num_groups < 1) fail_config(source, "key 'norm_num_groups' must be >= 1");
  // Sizes (config_fields.h): no count below overflows, and downsampling_factor() shifts by < 8.
  namespace cf = config_fields;
  if (n > cf::kMaxBlocks) {
    fail_config(source, "key 'block_out_channels' has ", n, " blocks, at most ", cf::kMaxBlocks);
  }
  for (size_t i = 0; i < n; ++i) {
    cf::check_range(source, "block_out_channels", block_out_channels[i], 1, cf::kMaxWidth);
  }
  cf::check_range(source, "layers_per_block", layers_per_block, 1, cf::kMaxDepth);
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"in_channels", in_channels},
                                   {"out_channels", out_channels},
                                   {"latent_channels", latent_channels}}) {
    cf::check_range(source, key, value, 1, cf::kMaxWidth);
  }
  for (size_t i = 0; i < n; ++i) {
    if (block_out_channels[i] < 1 || block_out_channels[i] % norm_num_groups != 0) {
      fail_config(source, "key 'block_out_channels': entry ", i, " (", block_out_channels[i],
                  ") is not a positive multiple of norm_num_groups ", norm_num_groups);
    }
  }
  if (!(scaling_factor > 0)) fail_config(source, "key 'scaling_factor' must be positive");
  for (const auto& [key, values] : {std::pair<const char*, const std::optional<std::vector<double>>*>{
                                        "latents_mean", &latents_mean},
                                    {"latents_std", &latents_std}}) {
    if (*values && static_cast<int64_t>((*values)->size()) != latent_channels) {
      fail_config(source, "key '", key, "' has ", (*values)->size(), " entries for ",
                  latent_channels, " latent_channels");
    }
  }
  if (latents_std) {
    for (double s : *latents_std) {
      if (!(s > 0)) fail_config(source, "key 'latents_std' must hold positive numbers");
    }
  }
}

AutoencoderKLConfig vae_config_from_json(const Json& j, const std::string& source) {
  if (!j.is_object()) fail_config(source, "expected a JSON object");
  if (j.contains("_class_name") && j["_class_name"] != "AutoencoderKL") {
    fail_config(source, "key '_class_name': ", j["_class_name"].dump(), " is not an AutoencoderKL");
  }
  AutoencoderKLConfig c;
  c.act_fn = value_or<std::string>(j, "act_fn", c.act_fn, source);  // validate() names others
  c.in_channels = value_or<int64_t>(j, "in_channels", c.in_channels, source);
  c.out_channels = value_or<int64_t>(j, "out_channels", c.out_channels, source);
  c.down_block_types = list_of<std::string>(j, "down_block_types", c.down_block_types, source);
  c.up_block_types = list_of<std::string>(j, "up_block_types", c.up_block_types, source);
  c.block_out_channels = list_of<int64_t>(j, "block_out_channels", c.block_out_channels, source);
  if (j.contains("layers_per_block") && !j["layers_per_block"].is_number_integer()) {
    fail_config(source, "key 'layers_per_block' must be one integer (every block has as many)");
  }
  c.layers_per_block = value_or<int64_t>(j, "layers_per_block", c.layers_per_block, source);
  c.latent_channels = value_or<int64_t>(j, "latent_channels", c.latent_channels, source);
  c.norm_num_groups = value_or<int64_t>(j, "norm_num_groups", c.norm_num_groups, source);
  if (j.contains("sample_size") && !j["sample_size"].is_null() && !j["sample_size"].is_number_integer()) {
    fail_config(source, "key 'sample_size': ", j["sample_size"].dump(),
                " is not supported (one integer)");
  }
  c.sample_size = value_or<int64_t>(j, "sample_size", c.sample_size, source);
  c.scaling_factor = value_or<double>(j, "scaling_factor", c.scaling_factor, source);
  if (j.contains("shift_factor") && !j["shift_factor"].is_null()) {
    if (!j["shift_factor"].is_number()) fail_config(source, "key 'shift_factor' must be null or a number");
    c.shift_factor = j["shift_factor"].get<double>();
  }
  c.latents_mean = optional_numbers(j, "latents_mean", source);
  c.latents_std = optional_numbers(j, "latents_std", source);
  c.force_upcast = value_or<bool>(j, "force_upcast", c.force_upcast, source);
  c.use_quant_conv = value_or<bool>(j, "use_quant_conv", c.use_quant_conv, source);
  c.use_post_quant_conv = value_or<bool>(j, "use_post_quant_conv", c.use_post_quant_conv, source);
  c.mid_block_add_attention =
      value_or<bool>(j, "mid_block_add_attention", c.mid_block_add_attention, source);
  c.validate(source);
  return c;
}

AutoencoderKLConfig load_vae_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  return vae_config_from_json(load_json_file(file), file.string());
}

bool is_vae_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  if (!std::filesystem::is_regular_file(file)) return false;
  const Json j = load_json_file(file);
  return j.is_object() && j.value("_class_name", std::string()) == "AutoencoderKL";
}

Json vae_config_to_json(const AutoencoderKLConfig& c) {
  auto optional_list = [](const std::optional<std::vector<double>>& v) {
    return v ? Json(*v) : Json(nullptr);
  };
  Json j;
  j["_class_name"] = "AutoencoderKL";
  j["in_channels"] = c.in_channels;
  j["out_channels"] = c.out_channels;
  j["down_block_types"] = c.down_block_types;
  j["up_block_types"] = c.up_block_types;
  j["block_out_channels"] = c.block_out_channels;
  j["layers_per_block"] = c.layers_per_block;
  j["act_fn"] = c.act_fn;
  j["latent_channels"] = c.latent_channels;
  j["norm_num_groups"] = c.norm_num_groups;
  j["sample_size"] = c.sample_size;
  j["scaling_factor"] = c.scaling_factor;
  j["shift_factor"] = c.shift_factor ? Json(*c.shift_factor) : Json(nullptr);
  j["latents_mean"] = optional_list(c.latents_mean);
  j["latents_std"] = optional_list(c.latents_std);
  j["force_upcast"] = c.force_upcast;
  j["use_quant_conv"] = c.use_quant_conv;
  j["use_post_quant_conv"] = c.use_post_quant_conv;
  j["mid_block_add_attention"] = c.mid_block_add_attention;
  return j;
}

// Parameter counts of diffusers' layers (named: see unet_counts in unet_config.cpp).
namespace vae_counts {

int64_t linear(int64_t in, int64_t out) { return in * out + out; }
int64_t conv(int64_t in, int64_t out, int64_t k) { return in * out * k * k + out; }
int64_t group_norm(int64_t c) { return 2 * c; }

// ResnetBlock2D without a time embedding (temb_channels=None).
int64_t resnet(int64_t in, int64_t out) {
  int64_t n = group_norm(in) + conv(in, out, 3) + group_norm(out) + conv(out, out, 3);
  if (in != out) n += conv(in, out, 1);
  return n;
}

// UNetMidBlock2D: ResNet, [group_norm, to_q, to_k, to_v, to_out.0 (all with bias)], ResNet.
int64_t mid_block(int64_t c, bool attention) {
  return 2 * resnet(c, c) + (attention ? group_norm(c) + 4 * linear(c, c) : 0);
}

}  // namespace vae_counts

std::vector<std::pair<std::string, int64_t>> count_vae_parameters_by_block(const AutoencoderKLConfig& c) {
  using namespace vae_counts;
  c.validate();
  const auto& ch = c.block_out_channels;
  const size_t n = ch.size();
  std::vector<std::pair<std::string, int64_t>> out;
  out.emplace_back("encoder.conv_in", conv(c.in_channels, ch[0], 3));
  int64_t prev = ch[0];
  for (size_t i = 0; i < n; ++i) {
    int64_t block = 0;
    for (int64_t l = 0; l < c.layers_per_block; ++l) block += resnet(l == 0 ? prev : ch[i], ch[i]);
    if (i + 1 < n) block += conv(ch[i], ch[i], 3);  // downsampler
    out.emplace_back("encoder.down_blocks." + std::to_string(i), block);
    prev = ch[i];
  }
  out.emplace_back("encoder.mid_block", mid_block(ch.back(), c.mid_block_add_attention));
  out.emplace_back("encoder.conv_out", group_norm(ch.back()) + conv(ch.back(), 2 * c.latent_channels, 3));
  if (c.use_quant_conv) out.emplace_back("quant_conv", conv(2 * c.latent_channels, 2 * c.latent_channels, 1));
  if (c.use_post_quant_conv) out.emplace_back("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));
  out.emplace_back("decoder.conv_in", conv(c.latent_channels, ch.back(), 3));
  out.emplace_back("decoder.mid_block", mid_block(ch.back(), c.mid_block_add_attention));
  prev = ch.back();
  for (size_t i = 0; i < n; ++i) {
    const int64_t width = ch[n - 1 - i];
    int64_t block = 0;
    for (int64_t l = 0; l < c.layers_per_block + 1; ++l) block += resnet(l == 0 ? prev : width, width);
    if (i + 1 < n) block += conv(width, width, 3);  // upsampler
    out.emplace_back("decoder.up_blocks." + std::to_string(i), block);
    prev = width;
  }
  out.emplace_back("decoder.conv_out", group_norm(ch[0]) + conv(ch[0], c.out_channels, 3));
  return out;
}

int64_t count_vae_parameters(const AutoencoderKLConfig& c) {
  int64_t total = 0;
  for (const auto& [name, count] : count_vae_parameters_by_block(c)) total += count;
  return total;
}

}  // namespace concord::diffusion
