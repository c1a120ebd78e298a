// Reading intermediate features by module path (concord/nn/feature_capture.h): a KOALA-style
// feature-distillation loss between a frozen teacher and a student, here two fresh tiny
// PanGu-π models, on the outputs of their blocks' self-attention modules.
//   build/examples/example_read_features [MODEL_CONFIG]   (run from the source tree)
// ci: @SOURCE@/configs/models/tiny-pangu-pi.json
#include <iostream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/runtime.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/nn/feature_capture.h"

int main(int argc, char** argv) {
  namespace nn = concord::nn;
  try {
    concord::init_runtime();
    const std::string config = argc > 1 ? argv[1] : "configs/models/tiny-pangu-pi.json";
    concord::lm::CausalLM teacher(concord::lm::load_any_model_config(config));
    concord::lm::CausalLM student(concord::lm::load_any_model_config(config));
    for (auto& p : teacher->parameters()) p.set_requires_grad(false);
    const at::Tensor ids = torch::randint(0, teacher->config.vocab_size, {2, 16}, torch::kLong);

    // Paths as named_modules() names them; the teacher's features are stored without a graph.
    const std::vector<std::string> paths = {"layers.0.attn", "layers.1.attn"};
    nn::FeatureCapture from_teacher(teacher, nn::FeatureCaptureOptions(paths).detach(true));
    nn::FeatureCapture from_student(student, paths);
    {
      torch::NoGradGuard no_grad;
      teacher->hidden_states(ids);
    }
    student->hidden_states(ids);
    at::Tensor loss = torch::zeros({});
    for (const auto& path : paths) {
      loss = loss + torch::mse_loss(from_student.get(path), from_teacher.get(path));
    }
    loss.backward();  // through the captured features into the student's parameters
    const auto& qkv = student->layers->ptr<concord::lm::TransformerBlockImpl>(0)->attn->qkv;
    std::cout << "features " << from_student.get(paths[0]).sizes() << ", loss "
              << loss.item<double>() << ", |grad layers.0.attn.qkv.weight| "
              << qkv->weight.grad().norm().item<double>() << "\n";

    // A mistyped path names the closest valid ones.
    try {
      nn::FeatureCapture typo(student, {"layers.0.atn"});
    } catch (const concord::Error& e) {
      std::cout << e.what() << "\n";
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "example_read_features: " << concord::one_line_message(e) << "\n";
    return 1;
  }
}
