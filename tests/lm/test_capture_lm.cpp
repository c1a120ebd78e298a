// nn::FeatureCapture on CausalLM (concord/nn/feature_capture.h): every module path of each
// family records exactly one output per forward, the residual stream it captures equals the
// blocks run by hand one after another, gradients reach exactly the parameters behind a
// captured feature, and a mistyped path names the right one.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/nn/feature_capture.h"
#include "test_support.h"

using concord::testing::max_abs_diff;

using namespace concord::lm;
namespace cn = concord::nn;

namespace {

const std::vector<std::string> kTinyModels = {"tiny-gpt2.json", "tiny-llama.json",
                                              "tiny-pangu-pi.json"};

CausalLM tiny_model(const std::string& name, uint64_t seed = 1) {
  torch::manual_seed(seed);
  return CausalLM(
      load_any_model_config(::concord::testing::source_dir().string() + "/configs/models/" + name));
}

// What hidden_states builds for an unpadded batch without a cache: plain causal attention and,
// for RoPE models, the rotary tables at positions 0..T-1.
cn::AttentionContext plain_context(const CausalLM& model, int64_t batch, int64_t steps) {
  cn::AttentionContext ctx;
  ctx.plain_causal = true;
  if (!model->config.learned_positions) {
    const at::Tensor pos = torch::arange(steps, torch::kLong).unsqueeze(0).expand({batch, steps});
    std::tie(ctx.cos, ctx.sin) =
        cn::rope_tables(pos, model->config.head_dim, model->config.rope_theta, at::kFloat);
  }
  return ctx;
}

at::Tensor norm_attn(TransformerBlockImpl& block, const at::Tensor& x) {
  return block.ln_attn ? block.ln_attn->forward(x) : block.rms_attn->forward(x);
}

at::Tensor final_norm(CausalLM& model, const at::Tensor& x) {
  return model->ln_final ? model->ln_final->forward(x) : model->rms_final->forward(x);
}

}  // namespace

TEST(FeatureCaptureLM, EveryModulePathRecordsOneOutputPerForward) {
  for (const auto& name : kTinyModels) {
    SCOPED_TRACE(name);
    CausalLM model = tiny_model(name);
    std::vector<std::string> paths = {""};
    for (const auto& item : model->named_modules("", /*include_self=*/false)) {
      if (item.key() != "layers") paths.push_back(item.key());  // the ModuleList container
    }
    cn::FeatureCapture capture(model, paths);
    const at::Tensor ids = torch::randint(0, 257, {2, 6}, torch::kLong);
    const at::Tensor logits = model->forward(ids);
    for (const auto& path : paths) EXPECT_EQ(capture.count(path), 1u) << path;
    EXPECT_TRUE(at::equal(capture.get(""), logits));
    if (model->lm_head) {
      EXPECT_TRUE(at::equal(capture.get("lm_head"), logits));
    }
  }
}

TEST(FeatureCaptureLM, EachBlockOutputIsTheBlockRunOnThePreviousOne) {
  for (const auto& name : kTinyModels) {
    SCOPED_TRACE(name);
    CausalLM model = tiny_model(name, 2);
    torch::NoGradGuard no_grad;
    const int64_t batch = 2, steps = 7;
    const at::Tensor ids = torch::randint(0, 257, {batch, steps}, torch::kLong);
    const std::string norm = model->ln_final ? "ln_final" : "rms_final";
    at::Tensor hidden;
    std::map<std::string, at::Tensor> got;
    {
      cn::FeatureCapture capture(
          model, {"embed", "embed_out", "layers.0", "layers.1", "layers.1.attn", norm});
      hidden = model->hidden_states(ids);
      for (const auto& path : capture.paths()) got[path] = capture.get(path);
    }
    at::Tensor embedded =
        model->embed->weight.index_select(0, ids.view({-1})).view({batch, steps, -1});
    EXPECT_TRUE(at::equal(got["embed"], embedded));
    if (model->positions) embedded = embedded + model->positions->weight.narrow(0, 0, steps);
    EXPECT_LT(max_abs_diff(got["embed_out"], embedded), 1e-7);
    const cn::AttentionContext ctx = plain_context(model, batch, steps);
    auto block = [&](size_t l) { return model->layers->ptr<TransformerBlockImpl>(l); };
    EXPECT_LT(max_abs_diff(got["layers.0"], block(0)->forward(got["embed_out"], ctx)), 1e-6);
    EXPECT_LT(max_abs_diff(got["layers.1"], block(1)->forward(got["layers.0"], ctx)), 1e-6);
    EXPECT_LT(max_abs_diff(got["layers.1.attn"],
                           block(1)->attn->forward(norm_attn(*block(1), got["layers.0"]), ctx)),
              1e-6);
    EXPECT_LT(max_abs_diff(hidden, final_norm(model, got["layers.1"])), 1e-6);
    EXPECT_TRUE(at::equal(got[norm], hidden));
    // The blocks change the stream, so the checks above fail on another layer's features.
    EXPECT_GT(max_abs_diff(got["layers.1"], got["layers.0"]), 1e-3);
  }
}

TEST(FeatureCaptureLM, GradientsReachOnlyTheParametersBehindACapturedBlock) {
  CausalLM model = tiny_model("tiny-pangu-pi.json", 3);
  const int64_t batch = 2, steps = 5;
  const at::Tensor ids = torch::randint(0, 257, {batch, steps}, torch::kLong);
  at::Tensor r;
  {
    cn::FeatureCapture capture(model, {"layers.0"});
    model->hidden_states(ids);
    const at::Tensor h = capture.get("layers.0");
    r = torch::randn(h.sizes());
    (h * r).sum().backward();
  }
  auto block = [&](size_t l) { return model->layers->ptr<TransformerBlockImpl>(l); };
  for (const auto& p : block(1)->parameters()) EXPECT_FALSE(p.grad().defined());
  ASSERT_TRUE(model->embed->weight.grad().defined());
  // The same loss computed directly: block 0 run on the embeddings.
  const at::Tensor embedded =
      model->embed->weight.index_select(0, ids.view({-1})).view({batch, steps, -1});
  const at::Tensor direct =
      (block(0)->forward(embedded, plain_context(model, batch, steps)) * r).sum();
  const std::vector<at::Tensor> params = {model->embed->weight, block(0)->mlp->fc_out->weight,
                                          block(0)->mlp->siaf->a, block(0)->shortcut->fc2_weight,
                                          block(0)->attn->qkv->weight};
  const auto want = torch::autograd::grad({direct}, params);
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_LT(max_abs_diff(params[i].grad(), want[i]), 1e-6) << i;
  }
}

TEST(FeatureCaptureLM, AMistypedPathNamesTheRightOne) {
  CausalLM model = tiny_model("tiny-llama.json");
  auto message = [&](const std::string& path) {
    try {
      cn::FeatureCapture capture(model, {path});
    } catch (const concord::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("layer.0").find("closest: 'layers.0'"), std::string::npos)
      << message("layer.0");
  EXPECT_NE(message("layers.1.atn").find("closest: 'layers.1.attn'"), std::string::npos)
      << message("layers.1.atn");
  // The tiny GPT-2 ties its head to the embedding: there is no lm_head module.
  CausalLM gpt2 = tiny_model("tiny-gpt2.json");
  EXPECT_THROW(cn::FeatureCapture(gpt2, {"lm_head"}), concord::Error);
}
