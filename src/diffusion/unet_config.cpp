#include "concord/diffusion/unet_config.h"

#include <algorithm>

#include "concord/core/error.h"
#include "config_fields.h"

namespace concord::diffusion {

namespace {

// An int, or a list of ints of length n; an int is repeated n times.
std::vector<int64_t> int_or_list(const Json& j, const char* key, size_t n, const std::string& source) {
  const Json& v = j.at(key);
  if (v.is_number_integer()) return std::vector<int64_t>(n, v.get<int64_t>());
  if (!v.is_array() || v.size() != n) {
    fail_config(source, "key '", key, "' must be an integer or a list of ", n, " integers");
  }
  std::vector<int64_t> out;
  for (const auto& x : v) {
    if (!x.is_number_integer()) fail_config(source, "key '", key, "' must hold integers");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

}  // namespace

using config_fields::require_default;
using config_fields::value_or;

void UNetConfig::validate(const std::string& source) const {
  const size_t n = block_out_channels.size();
  CONCORD_CHECK(n >= 1, source, ": block_out_channels is empty");
  auto need = [&](size_t size, const char* what) {
    if (size != n) fail_config(source, "key '", what, "' has ", size, " entries for ", n, " blocks");
  };
  need(down_block_types.size(), "down_block_types");
  need(up_block_types.size(), "up_block_types");
  need(layers_per_block.size(), "layers_per_block");
  need(transformer_layers_per_block.size(), "transformer_layers_per_block");
  need(reverse_transformer_layers_per_block.size(), "reverse_transformer_layers_per_block");
  need(num_attention_heads.size(), "num_attention_heads");
  for (const auto& t : down_block_types) {
    if (t != "DownBlock2D" && t != "CrossAttnDownBlock2D") {
      fail_config(source, "key 'down_block_types': '", t,
                  "' is not supported (DownBlock2D, CrossAttnDownBlock2D)");
    }
  }
  for (const auto& t : up_block_types) {
    if (t != "UpBlock2D" && t != "CrossAttnUpBlock2D") {
      fail_config(source, "key 'up_block_types': '", t,
                  "' is not supported (UpBlock2D, CrossAttnUpBlock2D)");
    }
  }
  if (!mid_block_type.empty() && mid_block_type != "UNetMidBlock2DCrossAttn") {
    fail_config(source, "key 'mid_block_type': '", mid_block_type,
                "' is not supported (UNetMidBlock2DCrossAttn or null)");
  }
  // Sizes first (config_fields.h): no count below overflows and norm_num_groups divides.
  namespace cf = config_fields;
  if (n > cf::kMaxBlocks) {
    fail_config(source, "key 'block_out_channels' has ", n, " blocks, at most ", cf::kMaxBlocks);
  }
  cf::check_range(source, "norm_num_groups", norm_num_groups, 1, cf::kMaxWidth);
  cf::check_range(source, "in_channels", in_channels, 1, cf::kMaxWidth);
  cf::check_range(source, "out_channels", out_channels, 1, cf::kMaxWidth);
  cf::check_range(source, "sample_size", sample_size, 1, cf::kMaxWidth);
  cf::check_range(source, "cross_attention_dim", cross_attention_dim, 1, cf::kMaxWidth);
  if (addition_embed_type == "text_time") {
    cf::check_range(source, "addition_time_embed_dim", addition_time_embed_dim, 1, cf::kMaxWidth);
    cf::check_range(source, "projection_class_embeddings_input_dim",
                    projection_class_embeddings_input_dim, 1, cf::kMaxWidth);
  }
  for (size_t i = 0; i < n; ++i) {
    cf::check_range(source, "block_out_channels", block_out_channels[i], 1, cf::kMaxWidth);
    cf::check_range(source, "layers_per_block", layers_per_block[i], 1, cf::kMaxDepth);
    cf::check_range(source, "transformer_layers_per_block", transformer_layers_per_block[i], 0,
                    cf::kMaxDepth);
    cf::check_range(source, "reverse_transformer_layers_per_block",
                    reverse_transformer_layers_per_block[i], 0, cf::kMaxDepth);
  }
  for (size_t i = 0; i < n; ++i) {
    CONCORD_CHECK(block_out_channels[i] > 0 && block_out_channels[i] % norm_num_groups == 0,
                  source, ": block_out_channels[", i, "] = ", block_out_channels[i],
                  " is not a multiple of norm_num_groups ", norm_num_groups);
    CONCORD_CHECK(num_attention_heads[i] > 0 && block_out_channels[i] % num_attention_heads[i] == 0,
                  source, ": block_out_channels[", i, "] = ", block_out_channels[i],
                  " is not a multiple of its ", num_attention_heads[i], " attention heads");
    CONCORD_CHECK(layers_per_block[i] >= 1, source, ": layers_per_block[", i, "] must be >= 1");
  }
  if (addition_embed_type != "" && addition_embed_type != "text_time") {
    fail_config(source, "key 'addition_embed_type': '", addition_embed_type,
                "' is not supported (text_time or null)");
  }
}

UNetConfig unet_config_from_json(const Json& j, const std::string& source) {
  if (!j.is_object()) fail_config(source, "expected a JSON object");
  if (j.contains("_class_name") && j["_class_name"] != "UNet2DConditionModel") {
    fail_config(source, "key '_class_name': ", j["_class_name"].dump(),
                " is not a UNet2DConditionModel");
  }
  for (const char* key : {"block_out_channels", "down_block_types", "up_block_types"}) {
    if (!j.contains(key)) fail_config(source, "missing key '", key, "'");
  }
  require_default(j, "act_fn", "silu", source);
  require_default(j, "time_embedding_type", "positional", source);
  require_default(j, "class_embed_type", nullptr, source);
  require_default(j, "num_class_embeds", nullptr, source);
  require_default(j, "encoder_hid_dim", nullptr, source);
  require_default(j, "time_cond_proj_dim", nullptr, source);
  require_default(j, "attention_type", "default", source);
  require_default(j, "dual_cross_attention", false, source);
  require_default(j, "only_cross_attention", false, source);
  require_default(j, "resnet_time_scale_shift", "default", source);
  require_default(j, "center_input_sample", false, source);
  require_default(j, "conv_in_kernel", 3, source);
  require_default(j, "conv_out_kernel", 3, source);
  require_default(j, "resnet_out_scale_factor", 1.0, source);
  require_default(j, "resnet_skip_time_act", false, source);
  require_default(j, "class_embeddings_concat", false, source);
  require_default(j, "time_embedding_dim", nullptr, source);
  require_default(j, "time_embedding_act_fn", nullptr, source);
  require_default(j, "timestep_post_act", nullptr, source);
  require_default(j, "cross_attention_norm", nullptr, source);
  require_default(j, "mid_block_scale_factor", 1, source);
  require_default(j, "downsample_padding", 1, source);

  UNetConfig c;
  try {
    c.block_out_channels =
        config_fields::required<std::vector<int64_t>>(j, "block_out_channels", source);
    c.down_block_types = j.at("down_block_types").get<std::vector<std::string>>();
    c.up_block_types = j.at("up_block_types").get<std::vector<std::string>>();
  } catch (const std::exception&) {
    fail_config(source, "block_out_channels must be integers and the block types strings");
  }
  const size_t n = c.block_out_channels.size();
  c.in_channels = value_or<int64_t>(j, "in_channels", 4, source);
  c.out_channels = value_or<int64_t>(j, "out_channels", 4, source);
  c.sample_size = value_or<int64_t>(j, "sample_size", 128, source);
  // Absent: diffusers' default mid block; null: none (KOALA-700M).
  c.mid_block_type = j.contains("mid_block_type")
                         ? value_or<std::string>(j, "mid_block_type", "", source)
                         : std::string("UNetMidBlock2DCrossAttn");
  c.layers_per_block = j.contains("layers_per_block") ? int_or_list(j, "layers_per_block", n, source)
                                                      : std::vector<int64_t>(n, 2);
  c.transformer_layers_per_block =
      j.contains("transformer_layers_per_block") && !j["transformer_layers_per_block"].is_null()
          ? int_or_list(j, "transformer_layers_per_block", n, source)
          : std::vector<int64_t>(n, 1);
  if (j.contains("reverse_transformer_layers_per_block") &&
      !j["reverse_transformer_layers_per_block"].is_null()) {
    c.reverse_transformer_layers_per_block =
        int_or_list(j, "reverse_transformer_layers_per_block", n, source);
  } else {
    c.reverse_transformer_layers_per_block = c.transformer_layers_per_block;
    std::reverse(c.reverse_transformer_layers_per_block.begin(),
                 c.reverse_transformer_layers_per_block.end());
  }
  // diffusers' misnomer: for SD/SDXL "attention_head_dim" holds the number of heads, and
  // num_attention_heads defaults to it.
  const char* heads_key = j.contains("num_attention_heads") && !j["num_attention_heads"].is_null()
                              ? "num_attention_heads"
                              : "attention_head_dim";
  c.num_attention_heads = j.contains(heads_key) ? int_or_list(j, heads_key, n, source)
                                                : std::vector<int64_t>(n, 8);
  if (j.contains("cross_attention_dim")) {
    const Json& v = j["cross_attention_dim"];
    if (!v.is_number_integer()) {
      fail_config(source, "key 'cross_attention_dim': only one dimension for every block is supported");
    }
    c.cross_attention_dim = v.get<int64_t>();
  } else {
    c.cross_attention_dim = 1280;
  }
  c.norm_num_groups = value_or<int64_t>(j, "norm_num_groups", 32, source);
  c.norm_eps = value_or<double>(j, "norm_eps", 1e-5, source);
  c.flip_sin_to_cos = value_or<bool>(j, "flip_sin_to_cos", true, source);
  c.freq_shift = value_or<int64_t>(j, "freq_shift", 0, source);
  c.use_linear_projection = value_or<bool>(j, "use_linear_projection", false, source);
  if (!c.use_linear_projection) {
    fail_config(source, "key 'use_linear_projection': false (1x1-conv projections) is not supported");
  }
  c.addition_embed_type = value_or<std::string>(j, "addition_embed_type", "", source);
  c.addition_time_embed_dim = value_or<int64_t>(j, "addition_time_embed_dim", 0, source);
  c.projection_class_embeddings_input_dim =
      value_or<int64_t>(j, "projection_class_embeddings_input_dim", 0, source);
  c.validate(source);
  return c;
}

UNetConfig load_unet_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  return unet_config_from_json(load_json_file(file), file.string());
}

bool is_unet_config(const std::filesystem::path& path) {
  const auto file = std::filesystem::is_directory(path) ? path / "config.json" : path;
  if (!std::filesystem::is_regular_file(file)) return false;
  const Json j = load_json_file(file);
  return j.is_object() && j.value("_class_name", std::string()) == "UNet2DConditionModel";
}

Json unet_config_to_json(const UNetConfig& c) {
  Json j;
  j["_class_name"] = "UNet2DConditionModel";
  j["in_channels"] = c.in_channels;
  j["out_channels"] = c.out_channels;
  j["sample_size"] = c.sample_size;
  j["down_block_types"] = c.down_block_types;
  j["up_block_types"] = c.up_block_types;
  j["mid_block_type"] = c.mid_block_type.empty() ? Json(nullptr) : Json(c.mid_block_type);
  j["block_out_channels"] = c.block_out_channels;
  j["layers_per_block"] = c.layers_per_block;
  j["transformer_layers_per_block"] = c.transformer_layers_per_block;
  j["reverse_transformer_layers_per_block"] = c.reverse_transformer_layers_per_block;
  j["attention_head_dim"] = c.num_attention_heads;
  j["num_attention_heads"] = nullptr;
  j["cross_attention_dim"] = c.cross_attention_dim;
  j["norm_num_groups"] = c.norm_num_groups;
  j["norm_eps"] = c.norm_eps;
  j["flip_sin_to_cos"] = c.flip_sin_to_cos;
  j["freq_shift"] = c.freq_shift;
  j["use_linear_projection"] = c.use_linear_projection;
  j["act_fn"] = "silu";
  j["addition_embed_type"] = c.addition_embed_type.empty() ? Json(nullptr) : Json(c.addition_embed_type);
  j["addition_time_embed_dim"] = c.addition_embed_type.empty() ? Json(nullptr) : Json(c.addition_time_embed_dim);
  j["projection_class_embeddings_input_dim"] =
      c.addition_embed_type.empty() ? Json(nullptr) : Json(c.projection_class_embeddings_input_dim);
  return j;
}

// Parameter counts of diffusers' layers. A named namespace: the VAE's config counts its layers
// with functions of the same names, and a unity build puts both files in one translation unit.
namespace unet_counts {

int64_t linear(int64_t in, int64_t out, bool bias = true) { return in * out + (bias ? out : 0); }
int64_t conv(int64_t in, int64_t out, int64_t k) { return in * out * k * k + out; }
int64_t group_norm(int64_t c) { return 2 * c; }
int64_t layer_norm(int64_t c) { return 2 * c; }

int64_t resnet(int64_t in, int64_t out, int64_t temb) {
  int64_t n = group_norm(in) + conv(in, out, 3) + linear(temb, out) + group_norm(out) + conv(out, out, 3);
  if (in != out) n += conv(in, out, 1);
  return n;
}

int64_t transformer(int64_t channels, int64_t depth, int64_t cross) {
  const int64_t d = channels;  // inner dim = heads * head_dim = channels
  const int64_t attn_self = 3 * linear(d, d, false) + linear(d, d);
  const int64_t attn_cross = linear(d, d, false) + 2 * linear(cross, d, false) + linear(d, d);
  const int64_t ff = linear(d, 2 * 4 * d) + linear(4 * d, d);
  const int64_t block = 3 * layer_norm(d) + attn_self + attn_cross + ff;
  return group_norm(channels) + linear(channels, d) + depth * block + linear(d, channels);
}

}  // namespace unet_counts

std::vector<std::pair<std::string, int64_t>> count_unet_parameters_by_block(const UNetConfig& c) {
  using namespace unet_counts;
  c.validate();
  const int64_t temb = c.time_embed_dim();
  const size_t n = c.block_out_channels.size();
  std::vector<std::pair<std::string, int64_t>> out;
  out.emplace_back("conv_in", conv(c.in_channels, c.block_out_channels[0], 3));
  out.emplace_back("time_embedding", linear(c.block_out_channels[0], temb) + linear(temb, temb));
  if (c.addition_embed_type == "text_time") {
    out.emplace_back("add_embedding", linear(c.projection_class_embeddings_input_dim, temb) + linear(temb, temb));
  }
  int64_t out_ch = c.block_out_channels[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_ch = out_ch;
    out_ch = c.block_out_channels[i];
    const bool cross = c.down_block_types[i] == "CrossAttnDownBlock2D";
    int64_t block = 0;
    for (int64_t l = 0; l < c.layers_per_block[i]; ++l) {
      block += resnet(l == 0 ? in_ch : out_ch, out_ch, temb);
      if (cross) block += transformer(out_ch, c.transformer_layers_per_block[i], c.cross_attention_dim);
    }
    if (i + 1 < n) block += conv(out_ch, out_ch, 3);  // downsampler
    out.emplace_back("down_blocks." + std::to_string(i), block);
  }
  const int64_t mid = c.block_out_channels.back();
  if (!c.mid_block_type.empty()) {
    out.emplace_back("mid_block", 2 * resnet(mid, mid, temb) +
                                      transformer(mid, c.transformer_layers_per_block.back(),
                                                  c.cross_attention_dim));
  }
  std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  std::vector<int64_t> rev_layers(c.layers_per_block.rbegin(), c.layers_per_block.rend());
  out_ch = rev[0];
  for (size_t i = 0; i < n; ++i) {
    const int64_t prev = out_ch;
    out_ch = rev[i];
    const int64_t in_ch = rev[std::min(i + 1, n - 1)];
    const int64_t layers = rev_layers[i] + 1;
    const bool cross = c.up_block_types[i] == "CrossAttnUpBlock2D";
    int64_t block = 0;
    for (int64_t l = 0; l < layers; ++l) {
      const int64_t skip = l == layers - 1 ? in_ch : out_ch;
      const int64_t res_in = l == 0 ? prev : out_ch;
      block += resnet(res_in + skip, out_ch, temb);
      if (cross) block += transformer(out_ch, c.reverse_transformer_layers_per_block[i], c.cross_attention_dim);
    }
    if (i + 1 < n) block += conv(out_ch, out_ch, 3);  // upsampler
    out.emplace_back("up_blocks." + std::to_string(i), block);
  }
  out.emplace_back("conv_out", group_norm(c.block_out_channels[0]) +
                                   conv(c.block_out_channels[0], c.out_channels, 3));
  return out;
}

int64_t count_unet_parameters(const UNetConfig& c) {
  int64_t total = 0;
  for (const auto& [name, n] : count_unet_parameters_by_block(c)) total += n;
  return total;
}

}  // namespace concord::diffusion
