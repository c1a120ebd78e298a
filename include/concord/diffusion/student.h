// KOALA students (arXiv 2312.04005, its efficient U-Net architecture): a smaller U-Net made from the teacher's by
// layer-wise removal, initialised with the teacher's weights, and the feature maps the
// distillation matches between the two.
//
// Removal is given by the student's own config (configs/models/koala-1b.json: one ResNet per
// down block and two per up block instead of SDXL's two and three, transformer depths
// [-, 2, 6] instead of [-, 2, 10]; koala-700m.json: depth 5 and no mid block). The student's
// blocks take the teacher's weights as BK-SDM and KOALA do:
//   - down block i: student layer j <- teacher layer j (the first ones are kept);
//   - up block i:   student layer j <- teacher layer j, and the student's last layer <- the
//     teacher's last (whose input width matches: it reads the next level's skip), so the
//     teacher's middle layers are the ones removed;
//   - each transformer keeps its norm and projections and the teacher's BOTTOM transformer
//     layers (blocks 0 .. depth - 1);
//   - the mid block, when the student has one, and everything outside the blocks are copied.
//
// Feature maps (the distillation's l_feat terms), from a registry. Per stage (each down block,
// the mid block when both models have one, each up block), the feature of the stage's last
// transformer (or last ResNet, or the block) in student and teacher:
//   self_attention   attn1's output, before the residual add, at the bottom transformer layer
//                    (KOALA's choice); stages without transformers: the block's output
//   cross_attention  attn2's output at the bottom layer (same fallback)
//   feed_forward     the GEGLU feed-forward's output at the bottom layer (same fallback)
//   resnet           the last ResNet's output
//   last_feature     the block's output (BK-SDM)
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "concord/diffusion/unet.h"
#include "concord/diffusion/unet_config.h"

namespace concord::diffusion {

/// Which teacher module each student module starts from ("down_blocks.1.resnets.0" <-
/// "down_blocks.1.resnets.0", "up_blocks.0.resnets.1" <- "up_blocks.0.resnets.2", ...),
/// module by module, for the report.
struct LayerMapping {
  std::vector<std::pair<std::string, std::string>> modules;  ///< (student, teacher)
};

/// Checks that `student` can be cut from `teacher` (same widths, heads, block types and
/// conditioning; no more layers or depth than the teacher) and says how, naming `student_source`
/// and the key on a mismatch.
LayerMapping student_layer_mapping(const UNetConfig& teacher, const UNetConfig& student,
                                   const std::string& student_source = "student config");

/// A student U-Net built from `student` with the teacher's weights copied per the mapping.
UNet2DCondition init_student_from_teacher(UNet2DCondition teacher, const UNetConfig& student,
                                          const std::string& student_source = "student config");

struct FeaturePair {
  std::string student, teacher;  ///< module paths in each model
};

using FeatureMapFn =
    std::function<std::vector<FeaturePair>(const UNetConfig& teacher, const UNetConfig& student)>;

/// Registers (or replaces) a feature map under `name`.
void register_feature_map(const std::string& name, FeatureMapFn fn);
/// The registered names, sorted.
std::vector<std::string> feature_map_names();
/// The pairs the named feature map distils; an unknown name is a ConfigError listing the valid,
/// and so is a pair whose module the student (or the teacher) does not build (e.g. a cross-
/// attention block of transformer depth 0 for `self_attention`), naming `student_source` (or
/// the teacher config) and the key that removes it.
std::vector<FeaturePair> feature_pairs(const std::string& name, const UNetConfig& teacher,
                                       const UNetConfig& student,
                                       const std::string& student_source = "student config");

}  // namespace concord::diffusion
