#include "concord/diffusion/student.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>

#include <torch/torch.h>

#include "concord/core/error.h"

namespace concord::diffusion {

namespace {

template <typename T>
void same(const T& a, const T& b, const char* key, const std::string& source) {
  if (!(a == b)) {
    fail_config(source, "key '", key, "' differs from the teacher's: a student is the teacher "
                "with layers removed, not a different architecture");
  }
}

int64_t up_layers(const UNetConfig& c, size_t i) {
  return c.layers_per_block[c.layers_per_block.size() - 1 - i] + 1;
}

// Stage names and, for each, its last layer index and whether it has transformers.
struct Stage {
  std::string path;
  int64_t last = 0;
  bool cross = false;
};

std::vector<Stage> stages(const UNetConfig& c, bool with_mid) {
  std::vector<Stage> out;
  const size_t n = c.block_out_channels.size();
  for (size_t i = 0; i < n; ++i) {
    out.push_back({"down_blocks." + std::to_string(i), c.layers_per_block[i] - 1,
                   c.down_block_types[i] == "CrossAttnDownBlock2D"});
  }
  if (with_mid) out.push_back({"mid_block", 0, true});
  for (size_t i = 0; i < n; ++i) {
    out.push_back({"up_blocks." + std::to_string(i), up_layers(c, i) - 1,
                   c.up_block_types[i] == "CrossAttnUpBlock2D"});
  }
  return out;
}

using StageFeature = std::function<std::string(const Stage&)>;

FeatureMapFn per_stage(StageFeature feature) {
  return [feature](const UNetConfig& teacher, const UNetConfig& student) {
    const bool mid = !teacher.mid_block_type.empty() && !student.mid_block_type.empty();
    const auto t = stages(teacher, mid), s = stages(student, mid);
    std::vector<FeaturePair> pairs;
    for (size_t i = 0; i < s.size(); ++i) pairs.push_back({feature(s[i]), feature(t[i])});
    return pairs;
  };
}

StageFeature transformer_part(const std::string& part) {
  return [part](const Stage& st) {
    if (!st.cross) return st.path;
    const int64_t attention = st.path == "mid_block" ? 0 : st.last;
    return st.path + ".attentions." + std::to_string(attention) + ".transformer_blocks.0." + part;
  };
}

struct FeatureRegistry {
  std::mutex mutex;
  std::map<std::string, FeatureMapFn> maps;
};

FeatureRegistry& registry() {
  static FeatureRegistry* r = [] {
    auto* reg = new FeatureRegistry;
    reg->maps["self_attention"] = per_stage(transformer_part("attn1"));
    reg->maps["cross_attention"] = per_stage(transformer_part("attn2"));
    reg->maps["feed_forward"] = per_stage(transformer_part("ff"));
    reg->maps["resnet"] = per_stage([](const Stage& st) {
      const int64_t last = st.path == "mid_block" ? 1 : st.last;
      return st.path + ".resnets." + std::to_string(last);
    });
    reg->maps["last_feature"] = per_stage([](const Stage& st) { return st.path; });
    return reg;
  }();
  return *r;
}

// Why `config` builds no module at `path`, as the config key that removes it, or "" when it
// builds one (or the path is of a form this check does not know: a custom map's own). Paths:
// <stage>, <stage>.resnets.<j>, <stage>.attentions.<j>.transformer_blocks.<k>[.<part>].
std::string missing_module(const UNetConfig& c, const std::string& path) {
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? dot : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  auto index = [](const std::string& text) -> int64_t {
    if (text.empty() || text.size() > 6 ||
        text.find_first_not_of("0123456789") != std::string::npos) {
      return -1;
    }
    return std::stoll(text);
  };
  const int64_t n = static_cast<int64_t>(c.block_out_channels.size());
  int64_t layers = 0, depth = 0;
  size_t next = 1;
  std::string depth_key = "transformer_layers_per_block";
  bool cross = false;
  if (n == 0 || c.transformer_layers_per_block.empty()) return "";  // not a validated config
  if (parts[0] == "mid_block") {
    if (c.mid_block_type.empty()) return "mid_block_type";
    layers = 2;  // resnets 0 and 1 around attentions.0
    depth = c.transformer_layers_per_block.back();
    cross = true;
  } else if (parts.size() >= 2 && (parts[0] == "down_blocks" || parts[0] == "up_blocks")) {
    const int64_t i = index(parts[1]);
    if (i < 0 || i >= n) return "block_out_channels";
    const size_t b = static_cast<size_t>(i);
    next = 2;
    if (parts[0] == "down_blocks") {
      layers = c.layers_per_block[b];
      depth = c.transformer_layers_per_block[b];
      cross = c.down_block_types[b] == "CrossAttnDownBlock2D";
    } else {
      layers = up_layers(c, b);
      depth = c.reverse_transformer_layers_per_block[b];
      depth_key = "reverse_transformer_layers_per_block";
      cross = c.up_block_types[b] == "CrossAttnUpBlock2D";
    }
  } else {
    return "";
  }
  if (parts.size() <= next + 1) return "";
  const bool attention = parts[next] == "attentions";
  if (!attention && parts[next] != "resnets") return "";
  if (attention && !cross) return parts[0] == "up_blocks" ? "up_block_types" : "down_block_types";
  const int64_t j = index(parts[next + 1]);
  if (j < 0 || j >= (attention && parts[0] == "mid_block" ? 1 : layers)) return "layers_per_block";
  if (!attention || parts.size() <= next + 3 || parts[next + 2] != "transformer_blocks") return "";
  const int64_t k = index(parts[next + 3]);
  return k < 0 || k >= depth ? depth_key : "";
}

}  // namespace

LayerMapping student_layer_mapping(const UNetConfig& t, const UNetConfig& s,
                                   const std::string& source) {
  s.validate(source);
  same(s.block_out_channels, t.block_out_channels, "block_out_channels", source);
  same(s.down_block_types, t.down_block_types, "down_block_types", source);
  same(s.up_block_types, t.up_block_types, "up_block_types", source);
  same(s.num_attention_heads, t.num_attention_heads, "attention_head_dim", source);
  same(s.cross_attention_dim, t.cross_attention_dim, "cross_attention_dim", source);
  same(s.in_channels, t.in_channels, "in_channels", source);
  same(s.out_channels, t.out_channels, "out_channels", source);
  same(s.norm_num_groups, t.norm_num_groups, "norm_num_groups", source);
  same(s.addition_embed_type, t.addition_embed_type, "addition_embed_type", source);
  same(s.addition_time_embed_dim, t.addition_time_embed_dim, "addition_time_embed_dim", source);
  same(s.projection_class_embeddings_input_dim, t.projection_class_embeddings_input_dim,
       "projection_class_embeddings_input_dim", source);
  if (!s.mid_block_type.empty() && t.mid_block_type.empty()) {
    fail_config(source, "key 'mid_block_type': the student has a mid block the teacher lacks");
  }
  const size_t n = s.block_out_channels.size();
  for (size_t i = 0; i < n; ++i) {
    if (s.layers_per_block[i] > t.layers_per_block[i]) {
      fail_config(source, "key 'layers_per_block': block ", i, " has ", s.layers_per_block[i],
                  " layers, more than the teacher's ", t.layers_per_block[i]);
    }
    if (s.transformer_layers_per_block[i] > t.transformer_layers_per_block[i]) {
      fail_config(source, "key 'transformer_layers_per_block': block ", i, " is deeper than the teacher's");
    }
    if (s.reverse_transformer_layers_per_block[i] > t.reverse_transformer_layers_per_block[i]) {
      fail_config(source, "key 'reverse_transformer_layers_per_block': up block ", i,
                  " is deeper than the teacher's");
    }
  }
  LayerMapping m;
  for (const char* top : {"conv_in", "time_embedding", "conv_norm_out", "conv_out"}) {
    m.modules.emplace_back(top, top);
  }
  if (s.addition_embed_type == "text_time") m.modules.emplace_back("add_embedding", "add_embedding");
  for (size_t i = 0; i < n; ++i) {
    const std::string b = "down_blocks." + std::to_string(i) + ".";
    const bool cross = s.down_block_types[i] == "CrossAttnDownBlock2D";
    for (int64_t j = 0; j < s.layers_per_block[i]; ++j) {
      m.modules.emplace_back(b + "resnets." + std::to_string(j), b + "resnets." + std::to_string(j));
      if (cross) {
        m.modules.emplace_back(b + "attentions." + std::to_string(j), b + "attentions." + std::to_string(j));
      }
    }
    if (i + 1 < n) m.modules.emplace_back(b + "downsamplers.0", b + "downsamplers.0");
  }
  if (!s.mid_block_type.empty()) m.modules.emplace_back("mid_block", "mid_block");
  for (size_t i = 0; i < n; ++i) {
    const std::string b = "up_blocks." + std::to_string(i) + ".";
    const bool cross = s.up_block_types[i] == "CrossAttnUpBlock2D";
    const int64_t ls = up_layers(s, i), lt = up_layers(t, i);
    for (int64_t j = 0; j < ls; ++j) {
      const int64_t from = j == ls - 1 ? lt - 1 : j;  // the last layer reads the next level's skip
      m.modules.emplace_back(b + "resnets." + std::to_string(j), b + "resnets." + std::to_string(from));
      if (cross) {
        m.modules.emplace_back(b + "attentions." + std::to_string(j), b + "attentions." + std::to_string(from));
      }
    }
    if (i + 1 < n) m.modules.emplace_back(b + "upsamplers.0", b + "upsamplers.0");
  }
  return m;
}

UNet2DCondition init_student_from_teacher(UNet2DCondition teacher, const UNetConfig& config,
                                          const std::string& source) {
  const LayerMapping mapping = student_layer_mapping(teacher->config, config, source);
  UNet2DCondition student(config);
  const auto smods = student->named_modules();
  const auto tmods = teacher->named_modules();
  torch::NoGradGuard no_grad;
  std::set<const void*> copied;
  for (const auto& [spath, tpath] : mapping.modules) {
    const auto* s = smods.find(spath);
    const auto* t = tmods.find(tpath);
    CONCORD_CHECK(s != nullptr && t != nullptr, "init_student_from_teacher: no module '", spath,
                  "' in the student or '", tpath, "' in the teacher");
    const auto tparams = (*t)->named_parameters();
    for (auto& p : (*s)->named_parameters()) {
      const auto* from = tparams.find(p.key());
      CONCORD_CHECK(from != nullptr && from->sizes() == p.value().sizes(),
                    "init_student_from_teacher: ", tpath, ".", p.key(), " does not fit ", spath, ".",
                    p.key());
      p.value().copy_(*from);
      copied.insert(p.value().unsafeGetTensorImpl());
    }
  }
  for (const auto& p : student->parameters()) {
    TORCH_INTERNAL_ASSERT(copied.count(p.unsafeGetTensorImpl()),
                          "init_student_from_teacher: a student parameter was not copied");
  }
  student->to(teacher->conv_in->weight.device(), teacher->conv_in->weight.scalar_type());
  return student;
}

void register_feature_map(const std::string& name, FeatureMapFn fn) {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.maps[name] = std::move(fn);
}

std::vector<std::string> feature_map_names() {
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, fn] : r.maps) names.push_back(name);
  return names;
}

std::vector<FeaturePair> feature_pairs(const std::string& name, const UNetConfig& teacher,
                                       const UNetConfig& student,
                                       const std::string& student_source) {
  FeatureMapFn fn;
  {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    auto it = r.maps.find(name);
    if (it != r.maps.end()) fn = it->second;
  }
  if (!fn) {
    std::string valid;
    for (const auto& n : feature_map_names()) valid += (valid.empty() ? "" : ", ") + n;
    fail_config("distillation", "key 'feature_map': unknown feature map '", name, "' (valid: ", valid, ")");
  }
  std::vector<FeaturePair> pairs = fn(teacher, student);
  // A student (or a teacher) without a module the map reads would fail at the first step's
  // capture; say so now, naming the config and the key that removes the module.
  for (const auto& pair : pairs) {
    const std::string student_key = missing_module(student, pair.student);
    if (!student_key.empty()) {
      fail_config(student_source, "key '", student_key, "': feature map '", name, "' reads '",
                  pair.student, "', which this config does not build");
    }
    const std::string teacher_key = missing_module(teacher, pair.teacher);
    if (!teacher_key.empty()) {
      fail_config("teacher config", "key '", teacher_key, "': feature map '", name, "' reads '",
                  pair.teacher, "', which this config does not build");
    }
  }
  return pairs;
}

}  // namespace concord::diffusion
