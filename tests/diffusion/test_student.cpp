// KOALA students cut from a teacher: the layer mapping, the copied weights, the feature maps'
// pairs, and the errors for a student that is not a cut of its teacher.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/diffusion/student.h"
#include "concord/diffusion/unet_checkpoint.h"
#include "concord/io/safetensors.h"
#include "concord/nn/feature_capture.h"
#include "test_support.h"

using namespace concord;
using concord::testing::fixture;

namespace {

diffusion::UNetConfig full(const std::string& name) {
  return diffusion::load_unet_config(::concord::testing::source_dir().string() + "/configs/models/" + name + ".json");
}

bool has_pair(const diffusion::LayerMapping& m, const std::string& s, const std::string& t) {
  for (const auto& p : m.modules) {
    if (p.first == s) return p.second == t;
  }
  return false;
}

}  // namespace

TEST(KoalaStudent, MappingKeepsTheFirstLayersAndTheLastUpLayer) {
  const auto m = diffusion::student_layer_mapping(full("sdxl-unet"), full("koala-1b"));
  EXPECT_TRUE(has_pair(m, "down_blocks.1.resnets.0", "down_blocks.1.resnets.0"));
  EXPECT_TRUE(has_pair(m, "down_blocks.1.attentions.0", "down_blocks.1.attentions.0"));
  EXPECT_TRUE(has_pair(m, "up_blocks.0.resnets.0", "up_blocks.0.resnets.0"));
  EXPECT_TRUE(has_pair(m, "up_blocks.0.resnets.1", "up_blocks.0.resnets.2"));
  EXPECT_TRUE(has_pair(m, "up_blocks.1.attentions.1", "up_blocks.1.attentions.2"));
  EXPECT_TRUE(has_pair(m, "mid_block", "mid_block"));
  const auto m700 = diffusion::student_layer_mapping(full("sdxl-unet"), full("koala-700m"));
  for (const auto& p : m700.modules) EXPECT_NE(p.first, "mid_block");
}

TEST(KoalaStudent, CopiesTheTeachersWeightsKeepingTheBottomTransformerLayers) {
  auto teacher = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  const auto config = diffusion::load_unet_config(fixture("diffusion") / "tiny-koala");
  auto student = diffusion::init_student_from_teacher(teacher, config);
  EXPECT_EQ(student->num_parameters(), diffusion::count_unet_parameters(config));
  const auto t = teacher->named_parameters();
  const auto s = student->named_parameters();
  // Same module, same weights.
  EXPECT_TRUE(s["conv_in.weight"].equal(t["conv_in.weight"]));
  EXPECT_TRUE(s["down_blocks.1.resnets.0.conv1.weight"].equal(t["down_blocks.1.resnets.0.conv1.weight"]));
  // The up block's last layer comes from the teacher's last (the middle one is removed).
  EXPECT_TRUE(s["up_blocks.0.resnets.1.conv1.weight"].equal(t["up_blocks.0.resnets.2.conv1.weight"]));
  // The bottom transformer layer of a deeper teacher transformer.
  const std::string st = "down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q.weight";
  EXPECT_TRUE(s[st].equal(t[st]));
  EXPECT_EQ(s.find("down_blocks.2.attentions.0.transformer_blocks.1.attn1.to_q.weight"), nullptr);
  // No mid block in this student.
  EXPECT_EQ(s.find("mid_block.resnets.0.conv1.weight"), nullptr);
}

TEST(KoalaStudent, FeatureMapsPairStagesOfEqualShape) {
  auto teacher = diffusion::load_unet(fixture("diffusion") / "tiny-sdxl");
  auto student = diffusion::init_student_from_teacher(
      teacher, diffusion::load_unet_config(fixture("diffusion") / "tiny-koala"));
  auto ref = io::load_safetensors(fixture("diffusion") / "tiny-sdxl" / "reference.safetensors");
  diffusion::UNetInputs in{ref["sample"], ref["timestep"], ref["encoder_hidden_states"],
                           ref["text_embeds"], ref["time_ids"]};
  for (const auto& name : diffusion::feature_map_names()) {
    SCOPED_TRACE(name);
    const auto pairs = diffusion::feature_pairs(name, teacher->config, student->config);
    ASSERT_EQ(pairs.size(), 6u);  // 3 down, 3 up; the student has no mid block
    std::vector<std::string> s, t;
    for (const auto& p : pairs) {
      s.push_back(p.student);
      t.push_back(p.teacher);
    }
    torch::NoGradGuard no_grad;
    nn::FeatureCapture cs(*student, s), ct(*teacher, t);
    student->forward(in);
    teacher->forward(in);
    for (const auto& p : pairs) EXPECT_EQ(cs.get(p.student).sizes(), ct.get(p.teacher).sizes()) << p.student;
  }
  const auto sa = diffusion::feature_pairs("self_attention", teacher->config, student->config);
  EXPECT_EQ(sa[0].student, "down_blocks.0");  // no transformer there: the block's output
  EXPECT_EQ(sa[1].student, "down_blocks.1.attentions.0.transformer_blocks.0.attn1");
  EXPECT_EQ(sa[1].teacher, "down_blocks.1.attentions.1.transformer_blocks.0.attn1");
  EXPECT_EQ(sa[3].teacher, "up_blocks.0.attentions.2.transformer_blocks.0.attn1");
  EXPECT_EQ(sa[3].student, "up_blocks.0.attentions.1.transformer_blocks.0.attn1");
  try {
    diffusion::feature_pairs("attention_maps", teacher->config, student->config);
    FAIL() << "an unknown feature map was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("self_attention"), std::string::npos) << e.what();
  }
}

TEST(KoalaStudent, AStudentThatIsNotACutOfItsTeacherIsNamed) {
  auto teacher = full("koala-700m");
  auto deeper = full("koala-1b");
  try {
    diffusion::student_layer_mapping(teacher, deeper, "koala-1b.json");
    FAIL() << "a student with a mid block the teacher lacks was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("mid_block_type"), std::string::npos) << e.what();
  }
  auto wider = full("koala-1b");
  wider.block_out_channels = {320, 640, 1920};
  wider.num_attention_heads = {5, 10, 30};
  try {
    diffusion::student_layer_mapping(full("sdxl-unet"), wider, "wide.json");
    FAIL() << "a wider student was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("block_out_channels"), std::string::npos) << e.what();
  }
  auto deep = full("koala-1b");
  deep.transformer_layers_per_block = {1, 2, 12};
  try {
    diffusion::student_layer_mapping(full("sdxl-unet"), deep, "deep.json");
    FAIL() << "a deeper student was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("transformer_layers_per_block"), std::string::npos) << e.what();
  }
}

// A student (a cut of its teacher) without the module a feature map reads, refused from the
// configs alone, naming the config file and the key that removed it; the real students have
// every module each map reads.
TEST(KoalaStudent, AStudentWithoutAModuleTheFeatureMapReadsIsNamed) {
  const auto sdxl = full("sdxl-unet");
  for (const std::string student : {"koala-1b", "koala-700m"}) {
    for (const auto& name : diffusion::feature_map_names()) {
      EXPECT_NO_THROW(diffusion::feature_pairs(name, sdxl, full(student), student)) << name;
    }
  }
  auto flat = full("koala-700m");  // the bottom level's transformers removed, down and up
  flat.transformer_layers_per_block = {0, 2, 0};
  flat.reverse_transformer_layers_per_block = {0, 2, 0};
  ASSERT_NO_THROW(diffusion::student_layer_mapping(sdxl, flat, "flat.json"));  // a cut, still
  try {
    diffusion::feature_pairs("self_attention", sdxl, flat, "flat.json");
    FAIL() << "a student without the bottom level's self-attention was accepted";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("flat.json"), std::string::npos) << what;
    EXPECT_NE(what.find("key 'transformer_layers_per_block'"), std::string::npos) << what;
    EXPECT_NE(what.find("down_blocks.2.attentions.0.transformer_blocks.0.attn1"), std::string::npos)
        << what;
  }
  // Maps that read no transformer are unaffected.
  EXPECT_NO_THROW(diffusion::feature_pairs("resnet", sdxl, flat, "flat.json"));
  EXPECT_NO_THROW(diffusion::feature_pairs("last_feature", sdxl, flat, "flat.json"));
}
