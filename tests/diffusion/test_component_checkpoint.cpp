// The checkpoint helper the U-Net, the VAE and the text encoders share (component_checkpoint.h):
// parameters and buffers checked by name, shape and type class, name maps (a prefix added or
// dropped, a tensor skipped), dtype conversion that leaves integer buffers alone, and
// save_pretrained's file names. The U-Net's and the VAE's tests cover folders and shards.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/diffusion/component_checkpoint.h"
#include "concord/io/safetensors.h"
#include "test_support.h"

using concord::testing::max_abs_diff;

using namespace concord;

namespace {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(ComponentCheckpoint, ChecksBuffersMapsNamesAndConvertsTypes) {
  // A module with a float and an integer buffer (BatchNorm's running stats and its count).
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)), torch::nn::BatchNorm2d(3));
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  for (auto& b : net->buffers()) {
    if (at::isFloatingType(b.scalar_type())) b.uniform_();
  }
  net->named_buffers()["1.num_batches_tracked"].fill_(5);
  concord::testing::TempDir tmp;
  const auto files = diffusion::save_component_weights(*net, tmp / "m", diffusion::kTransformersWeightsPrefix);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename(), "model.safetensors");
  const auto saved = io::load_safetensors(files[0]);
  EXPECT_EQ(saved.size(), 2u + 5u);  // weight, bias; weight, bias, running_mean, running_var, count
  EXPECT_EQ(saved.at("1.num_batches_tracked").scalar_type(), at::kLong);

  // Into a fresh module in bf16: floats convert, the integer buffer keeps its type.
  torch::nn::Sequential fresh(torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 3, 1)), torch::nn::BatchNorm2d(3));
  diffusion::ComponentLoadOptions bf16;
  bf16.dtype = at::kBFloat16;
  diffusion::load_component_weights(*fresh, diffusion::ComponentWeights(tmp / "m", "model"), bf16, "net");
  EXPECT_EQ(fresh->named_parameters()["0.weight"].scalar_type(), at::kBFloat16);
  EXPECT_EQ(fresh->named_buffers()["1.running_var"].scalar_type(), at::kBFloat16);
  EXPECT_EQ(fresh->named_buffers()["1.num_batches_tracked"].scalar_type(), at::kLong);
  EXPECT_EQ(fresh->named_buffers()["1.num_batches_tracked"].item<int64_t>(), 5);
  EXPECT_LT(max_abs_diff(fresh->named_buffers()["1.running_mean"],
                         net->named_buffers()["1.running_mean"]),
            1e-2);

  // A missing buffer is named; a map can add a prefix and drop a tensor the module does not hold
  // (transformers' CLIP: "text_model." or not, and its old position_ids buffer).
  auto tensors = saved;
  tensors.erase("1.running_var");
  std::string m = error_of([&] {
    diffusion::load_component_weights(*fresh, diffusion::ComponentWeights(tensors, "mem.safetensors"), {}, "net");
  });
  EXPECT_NE(m.find("mem.safetensors: tensor '1.running_var' is missing (the config's net has it)"),
            std::string::npos) << m;
  std::map<std::string, at::Tensor> prefixed;
  for (const auto& [name, t] : saved) prefixed["text_model." + name] = t;
  prefixed["text_model.position_ids"] = at::arange(4);
  const diffusion::TensorNameMap strip = [](const std::string& n) -> std::string {
    if (n == "text_model.position_ids") return "";
    return n.rfind("text_model.", 0) == 0 ? n.substr(11) : n;
  };
  diffusion::ComponentWeights mapped(prefixed, "p.safetensors", strip);
  EXPECT_EQ(mapped.names().size(), saved.size());
  EXPECT_EQ(mapped.checkpoint_name("0.weight"), "text_model.0.weight");
  diffusion::load_component_weights(*fresh, mapped, {}, "net");
  EXPECT_EQ(
      max_abs_diff(fresh->named_parameters()["0.weight"], net->named_parameters()["0.weight"]),
      0.0);
  // A misshapen renamed tensor is named as stored and as read.
  prefixed["text_model.0.bias"] = at::zeros({4});
  m = error_of([&] {
    diffusion::load_component_weights(*fresh, diffusion::ComponentWeights(prefixed, "p.safetensors", strip), {}, "net");
  });
  EXPECT_NE(m.find("tensor 'text_model.0.bias' (read as '0.bias') has shape [4], expected [3]"), std::string::npos)
      << m;
  // An integer buffer stored as float is refused.
  tensors = saved;
  tensors["1.num_batches_tracked"] = at::zeros({}, at::kFloat);
  m = error_of([&] {
    diffusion::load_component_weights(*fresh, diffusion::ComponentWeights(tensors, "t"), {}, "net");
  });
  EXPECT_NE(m.find("'1.num_batches_tracked' is not of type Long"), std::string::npos) << m;
}
