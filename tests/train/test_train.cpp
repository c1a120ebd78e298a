// Tests of the train layer: the learning-rate schedules' values, AdamW against
// torch::optim::AdamW, gradient accumulation equal to one large batch, packed SFT rows equal to
// their samples one by one, a planted sequence learnt, checkpoints (format checks, retention)
// and a resumed run ending with bit-for-bit the weights of an uninterrupted one; the generic
// Trainer's parts: parameter groups, frozen modules, the gradient hook, several named modules
// in one checkpoint, autocast as an option.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <filesystem>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/core/files.h"
#include "concord/core/metrics.h"
#include "concord/core/runtime.h"
#include "concord/data/builtin_corpus.h"
#include "concord/data/pretrain.h"
#include "concord/data/sft.h"
#include "concord/io/safetensors.h"
#include "concord/lm/causal_lm.h"
#include "concord/lm/model_config.h"
#include "concord/text/byte_tokenizer.h"
#include "concord/train/ablation.h"
#include "concord/train/adamw.h"
#include "concord/train/checkpoint.h"
#include "concord/train/lr_schedule.h"
#include "concord/train/next_token.h"
#include "concord/train/trainer.h"
#include "test_support.h"

namespace fs = std::filesystem;
using namespace concord::train;
using concord::testing::TempDir;

namespace {

concord::lm::ModelConfig tiny(const std::string& family) {
  const std::string extra =
      family == "pangu_pi"
          ? R"(, "siaf": {"terms": 2, "neighbour_kernel": 3}, "augmented_shortcut": {"paths": 2, "reduction": 8})"
          : "";
  return concord::lm::model_config_from_json(
      concord::parse_json(R"({"family": ")" + family + R"(", "vocab_size": 257, "hidden_size": 32,
        "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 48,
        "max_position_embeddings": 128, "eos_token_id": 256, "pad_token_id": 256)" + extra + "}",
                          "<test>"),
      "<test>");
}

concord::lm::CausalLM fresh_model(const std::string& family, uint64_t seed = 7) {
  concord::seed_everything(seed);
  return concord::lm::CausalLM(tiny(family));
}

TrainerOptions quiet_options(int64_t steps) {
  TrainerOptions o;
  o.max_steps = steps;
  o.optimizer.lr = 3e-3;
  o.warmup_steps = 2;
  o.progress = false;
  return o;
}

double max_weight_diff(concord::lm::CausalLM a, concord::lm::CausalLM b) {
  double diff = 0;
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  for (const auto& item : pa) {
    diff = std::max(diff, (item.value() - pb[item.key()]).abs().max().item<double>());
  }
  return diff;
}

bool weights_equal(concord::lm::CausalLM a, concord::lm::CausalLM b) {
  auto pb = b->named_parameters();
  for (const auto& item : a->named_parameters()) {
    if (!torch::equal(item.value(), pb[item.key()])) return false;
  }
  return true;
}

const concord::data::PretrainDataset& corpus_blocks() {
  static const concord::data::PretrainDataset data = concord::data::PretrainDataset::from_texts(
      concord::data::builtin_corpus(40, 3), concord::text::ByteTokenizer(), 32);
  return data;
}

}  // namespace

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrScheduleOptions o;
  o.peak_lr = 1.0;
  o.warmup_steps = 4;
  o.total_steps = 14;
  o.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(learning_rate(o, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(o, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 4), 1.0);            // decay starts at the peak
  EXPECT_NEAR(learning_rate(o, 9), 0.1 + 0.9 * 0.5, 1e-12);  // half way: cos(pi/2) = 0
  EXPECT_NEAR(learning_rate(o, 14), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(o, 100), 0.1, 1e-12);
  o.name = "linear";
  EXPECT_NEAR(learning_rate(o, 9), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(o, 6), 0.1 + 0.9 * 0.8, 1e-12);
  o.name = "constant";
  EXPECT_DOUBLE_EQ(learning_rate(o, 13), 1.0);
  o.name = "step";
  EXPECT_THROW(o.validate(), concord::Error);
}

// Fused CPU path (fp32) and ATen path (fp64) against torch::optim::AdamW with the same decay
// split: decayed weight matrices, undecayed biases.
TEST(AdamW, MatchesTorchAdamW) {
  for (auto dtype : {at::kFloat, at::kDouble}) {
    torch::manual_seed(1);
    at::Tensor w = torch::randn({7, 5}, dtype).requires_grad_();
    at::Tensor bias = torch::randn({5}, dtype).requires_grad_();
    at::Tensor w2 = w.detach().clone().requires_grad_();
    at::Tensor bias2 = bias.detach().clone().requires_grad_();
    AdamWOptions o;
    o.lr = 0.01;
    o.weight_decay = 0.1;
    AdamW ours({{"proj.weight", w}, {"proj.bias", bias}}, o);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(std::vector<at::Tensor>{w2},
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1)));
    groups.emplace_back(std::vector<at::Tensor>{bias2},
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(0.01).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.0)));
    torch::optim::AdamW reference(groups);
    for (int step = 0; step < 6; ++step) {
      const at::Tensor x = torch::randn({3, 7}, dtype);
      ours.zero_grad();
      reference.zero_grad();
      (x.matmul(w) + bias).pow(2).sum().backward();
      (x.matmul(w2) + bias2).pow(2).sum().backward();
      ours.step();
      reference.step();
    }
    const double tol = dtype == at::kFloat ? 2e-6 : 1e-12;
    EXPECT_LT((w - w2).abs().max().item<double>(), tol) << dtype;
    EXPECT_LT((bias - bias2).abs().max().item<double>(), tol) << dtype;
  }
}

TEST(AdamW, StateRoundTripAndErrors) {
  at::Tensor w = torch::ones({2, 3}).requires_grad_();
  AdamW opt({{"w.weight", w}}, AdamWOptions{});
  w.sum().backward();
  opt.step();
  auto state = opt.state_dict();
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state["w.weight.step"].item<int64_t>(), 1);
  AdamW other({{"w.weight", w}}, AdamWOptions{});
  other.load_state_dict(state, "state.safetensors");
  EXPECT_TRUE(torch::equal(other.state_dict()["w.weight.exp_avg"], state["w.weight.exp_avg"]));
  state["stray.exp_avg"] = torch::zeros({1});
  try {
    other.load_state_dict(state, "state.safetensors");
    FAIL() << "an unknown entry must be rejected";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("stray.exp_avg"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(decays_weight("layers.0.attn.q_proj.weight", torch::zeros({4, 4})));
  EXPECT_FALSE(decays_weight("layers.0.rms_attn.weight", torch::zeros({4})));
  EXPECT_FALSE(decays_weight("layers.0.mlp.siaf.a", torch::zeros({2, 4})));
}

// Two micro-batches of 2 rows take the same step as one batch of 4 (token-mean over the step).
TEST(Trainer, AccumulationEqualsOneLargeBatch) {
  const auto& data = corpus_blocks();
  auto a = fresh_model("llama");
  auto b = a->clone();
  auto b_model = std::dynamic_pointer_cast<concord::lm::CausalLMImpl>(b);
  concord::lm::CausalLM bm(b_model);
  TrainerOptions oa = quiet_options(1);
  oa.warmup_steps = 0;
  Trainer ta({{"model", a.ptr()}}, oa);
  NextTokenObjective la(a);
  TrainerOptions ob = oa;
  ob.grad_accum_steps = 2;
  Trainer tb({{"model", bm.ptr()}}, ob);
  NextTokenObjective lb(bm);
  const auto big = to_token_batch(data.get_batch({0, 1, 2, 3}));
  const auto s1 = ta.train_step(la, {big});
  const auto s2 = tb.train_step(lb, {to_token_batch(data.get_batch({0, 1})),
                                     to_token_batch(data.get_batch({2, 3}))});
  EXPECT_EQ(s1.units, s2.units);
  EXPECT_EQ(s1.units, big.target_tokens());
  EXPECT_NEAR(s1.loss, s2.loss, 1e-6);
  EXPECT_NEAR(s1.grad_norm, s2.grad_norm, 1e-5);
  // The gradients the step used (still held: zero_grad runs at the start of a step).
  auto grads_b = bm->named_parameters();
  double grad_diff = 0;
  for (const auto& item : a->named_parameters()) {
    grad_diff = std::max(grad_diff,
                         (item.value().grad() - grads_b[item.key()].grad()).abs().max().item<double>());
  }
  EXPECT_LT(grad_diff, 1e-6);
}

// bf16 autocast on a GPU (skipped without one; scripts/gpu-check.sh runs it): the same steps as
// fp32 on the same device to bf16 accuracy, the weights and AdamW state still fp32, the loss
// going down.
TEST(Trainer, Bf16AutocastTracksFp32_CUDA) {
  CONCORD_REQUIRE_CUDA();
  const auto& data = corpus_blocks();
  auto fp32 = fresh_model("llama");
  fp32->to(torch::kCUDA);
  auto copy = std::dynamic_pointer_cast<concord::lm::CausalLMImpl>(fp32->clone());
  concord::lm::CausalLM bf16(copy);
  TrainerOptions o32 = quiet_options(8);
  TrainerOptions o16 = o32;
  o16.precision = "bf16";
  Trainer t32({{"model", fp32.ptr()}}, o32), t16({{"model", bf16.ptr()}}, o16);
  NextTokenObjective l32_objective(fp32), l16_objective(bf16);
  std::vector<double> l32, l16;
  for (int64_t s = 0; s < 8; ++s) {
    const int64_t n = data.size();
    const auto batch = to_token_batch(data.get_batch({(2 * s) % n, (2 * s + 1) % n}));
    l32.push_back(t32.train_step(l32_objective, {batch}).loss);
    l16.push_back(t16.train_step(l16_objective, {batch}).loss);
  }
  for (size_t i = 0; i < l32.size(); ++i) EXPECT_NEAR(l16[i], l32[i], 0.05 * l32[i]) << i;
  EXPECT_LT(l16.back(), l16.front());
  for (const auto& p : bf16->parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
}

// Packed rows (block-causal mask, restarting positions) give the loss of the samples one by one.
TEST(Trainer, PackedSftRowsEqualUnpacked) {
  const concord::text::ByteTokenizer tok;
  std::vector<concord::data::SftRecord> records;
  for (int i = 0; i < 6; ++i) {
    concord::data::SftRecord r;
    r.prompt = "Question: " + std::to_string(i * 7) + " + 1?";
    r.completion = " It is " + std::to_string(i * 7 + 1) + ".";
    records.push_back(r);
  }
  concord::data::SftOptions plain;
  plain.max_length = 120;
  concord::data::SftOptions packed = plain;
  packed.packing = true;
  const auto d1 = concord::data::SftDataset::from_records(records, tok, plain);
  const auto d2 = concord::data::SftDataset::from_records(records, tok, packed);
  ASSERT_LT(d2.size(), d1.size());
  auto model = fresh_model("pangu_pi");
  SampledBatches<concord::data::SftDataset> s1(d1, {6, false});
  SampledBatches<concord::data::SftDataset> s2(d2, {6, false});
  const auto packed_batch = s2.next();
  ASSERT_TRUE(packed_batch.segment_ids.defined());
  s2.load_state(s2.state());
  const double l1 = mean_token_loss(model, s1);
  const double l2 = mean_token_loss(model, s2);
  EXPECT_NEAR(l1, l2, 1e-5);
}

// A planted structure: the built-in corpus's templates. A small model must cut its loss well
// below the byte-level entropy of the start (log 257 = 5.55).
TEST(Trainer, LearnsTheCorpusAndEvaluationIsRepeatable) {
  const auto& data = corpus_blocks();
  auto model = fresh_model("pangu_pi");
  SampledBatches<concord::data::PretrainDataset> train(data, {8, true, 5});
  SampledBatches<concord::data::PretrainDataset> eval(data, {16, false});
  TrainerOptions o = quiet_options(40);
  o.optimizer.lr = 1e-2;
  Trainer trainer({{"model", model.ptr()}}, o);
  NextTokenObjective objective(model);
  const double before = trainer.evaluate(objective, eval).loss;
  // The cursor is restored after each eval.
  EXPECT_DOUBLE_EQ(before, trainer.evaluate(objective, eval).loss);
  const auto result = trainer.fit(objective, train, &eval);
  EXPECT_EQ(result.steps, 40);
  std::cout << "eval loss " << before << " -> " << *result.final_eval_loss << "\n";
  ASSERT_TRUE(result.final_eval_loss.has_value());
  EXPECT_GT(before, 5.0);
  EXPECT_LT(*result.final_eval_loss, 3.0);
}

// Interrupt at step 4 of 8, resume from the checkpoint in a fresh process state: the final
// weights equal the uninterrupted run's bit for bit.
TEST(Trainer, ResumeIsBitExact) {
  const auto& data = corpus_blocks();
  TempDir tmp;
  TrainerOptions o = quiet_options(8);
  o.checkpoint_every = 4;
  o.max_grad_norm = 0.5;
  const concord::data::SamplerOptions sampling{4, true, 11};

  auto full = fresh_model("pangu_pi", 7);
  {
    SampledBatches<concord::data::PretrainDataset> train(data, sampling);
    concord::RunDirectory rd(tmp / "full");
    NextTokenObjective objective(full);
    Trainer({{"model", full.ptr()}}, o).fit(objective, train, nullptr, &rd);
  }
  {
    // The interrupted run: 4 steps of the same 8-step schedule, then its checkpoint.
    auto model = fresh_model("pangu_pi", 7);
    SampledBatches<concord::data::PretrainDataset> train(data, sampling);
    Trainer first({{"model", model.ptr()}}, o);
    NextTokenObjective objective(model);
    for (int i = 0; i < 4; ++i) first.train_step(objective, {train.next()});
    TrainingState st;
    st.step = first.step();
    st.data = train.state();
    save_checkpoint(tmp / "part" / "checkpoints", first.modules(), first.optimizer(), st);
  }
  const auto ckpt = latest_checkpoint(tmp / "part" / "checkpoints");
  ASSERT_TRUE(ckpt.has_value());
  (void)torch::randn({100});  // other work in the process draws from the global RNG meanwhile
  auto resumed = fresh_model("pangu_pi", 99);  // the resumed run must not depend on its init
  {
    SampledBatches<concord::data::PretrainDataset> train(data, sampling);
    Trainer trainer({{"model", resumed.ptr()}}, o);
    NextTokenObjective objective(resumed);
    trainer.restore(*ckpt, train);
    EXPECT_EQ(trainer.step(), 4);
    concord::RunDirectory rd(tmp / "part", true);
    trainer.fit(objective, train, nullptr, &rd);
  }
  EXPECT_TRUE(weights_equal(full, resumed)) << "max diff " << max_weight_diff(full, resumed);
  EXPECT_EQ(latest_checkpoint(tmp / "part" / "checkpoints")->filename(), "step-00000008");
}

TEST(Checkpoint, RetentionAndFormatErrors) {
  TempDir tmp;
  auto model = fresh_model("llama");
  const std::vector<NamedModule> modules{{"model", model.ptr()}};
  AdamW opt(std::vector<ParamGroup>{}, AdamWOptions{});
  for (int64_t step : {1, 2, 3}) {
    TrainingState st;
    st.step = step;
    save_checkpoint(tmp / "ck", modules, opt, st, 2);
  }
  EXPECT_FALSE(fs::exists(tmp / "ck" / "step-00000001"));
  EXPECT_TRUE(fs::exists(tmp / "ck" / "step-00000002"));
  EXPECT_EQ(latest_checkpoint(tmp / "ck")->filename(), "step-00000003");
  // A leftover temporary folder (a crash mid-save) is never taken for a checkpoint.
  fs::create_directories(tmp / "ck" / "step-00000004.tmp-1");
  EXPECT_EQ(latest_checkpoint(tmp / "ck")->filename(), "step-00000003");

  const fs::path state = tmp / "ck" / "step-00000003" / "training_state.safetensors";
  auto tensors = concord::io::load_safetensors(state);
  auto expect_error = [&](const std::map<std::string, std::string>& meta, const std::string& needle) {
    concord::io::save_safetensors(state, tensors, meta);
    try {
      load_checkpoint(tmp / "ck" / "step-00000003", modules, opt);
      FAIL() << "expected an error containing " << needle;
    } catch (const concord::Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
      EXPECT_NE(msg.find("training_state.safetensors"), std::string::npos) << msg;
    }
  };
  const std::string version = std::to_string(kTrainingStateVersion);
  const std::string state_json = R"({"step":3,"modules":["model"]})";
  expect_error({{"concord.magic", "something-else"}, {"concord.version", version}, {"concord.state", state_json}},
               "not a Concord training state");
  expect_error({{"concord.magic", kTrainingStateMagic}, {"concord.version", "9"}, {"concord.state", state_json}},
               "version 9");
  expect_error({{"concord.magic", kTrainingStateMagic}, {"concord.version", "1"}, {"concord.state", state_json}},
               "version 1");
  expect_error({{"concord.magic", kTrainingStateMagic}, {"concord.version", version}, {"concord.state", "{\"step\":"}},
               "not valid JSON");
  expect_error({{"concord.magic", kTrainingStateMagic}, {"concord.version", version}}, "concord.state");
  expect_error({{"concord.magic", kTrainingStateMagic}, {"concord.version", version},
                {"concord.state", R"({"step":3,"modules":["policy"]})"}},
               "holds modules [policy], the run has [model]");
}

// Equal size: every variant's FFN width brings it within one FFN unit of the PanGu-π model.
TEST(Ablation, VariantsHaveEqualSizeAndTheRightParts) {
  const auto pangu = tiny("pangu_pi");
  const auto variants = pangu_ablation_variants(pangu, {"vanilla", "siaf", "as", "siaf+as"});
  ASSERT_EQ(variants.size(), 4u);
  const int64_t target = concord::lm::count_parameters(variants[3].config);
  EXPECT_EQ(variants[3].config.intermediate_size, pangu.intermediate_size);
  for (const auto& v : variants) {
    const int64_t n = concord::lm::count_parameters(v.config);
    const int64_t unit = 3 * v.config.hidden_size * v.config.num_layers +
                         2 * v.config.siaf_terms * v.config.num_layers;
    EXPECT_LE(std::abs(n - target), unit / 2 + 1) << v.name << " " << n << " vs " << target;
  }
  EXPECT_EQ(variants[0].config.family, concord::lm::ModelFamily::Llama);
  EXPECT_EQ(variants[0].config.siaf_terms + variants[0].config.shortcut_paths, 0);
  EXPECT_GT(variants[1].config.siaf_terms, 0);
  EXPECT_EQ(variants[1].config.shortcut_paths, 0);
  EXPECT_EQ(variants[2].config.siaf_terms, 0);
  EXPECT_GT(variants[2].config.shortcut_paths, 0);
  EXPECT_GT(variants[0].config.intermediate_size, variants[3].config.intermediate_size);
  EXPECT_THROW(pangu_ablation_variants(pangu, {"wide"}), concord::Error);
}

// The FLOP estimate behind the latency table: for a Llama config, 2 FLOPs per weight of every
// matrix but the embedding table (the exact parameter count less the table and the RMSNorm
// scales) per token, plus the T x T attention; the SIAF adds its series per FFN activation.
TEST(Ablation, ForwardFlopsCountEveryMatrixAndTheSiafSeries) {
  const auto variants = pangu_ablation_variants(tiny("pangu_pi"), {"vanilla", "siaf", "siaf+as"});
  const auto& v = variants[0].config;
  const int64_t T = 16;
  const double d = v.hidden_size, L = v.num_layers;
  const double matrices = static_cast<double>(concord::lm::count_parameters(v)) -
                          v.vocab_size * d - (2 * L + 1) * d;
  const double attention = 4.0 * T * T * v.num_heads * v.head_dim * L;
  EXPECT_DOUBLE_EQ(forward_flops(v, 1, T), 2.0 * T * matrices + attention);
  EXPECT_DOUBLE_EQ(forward_flops(v, 3, T), 3 * forward_flops(v, 1, T));
  // The SIAF variant's extra work over a vanilla model of its own width is its series.
  auto same_width = variants[1].config;
  same_width.siaf_terms = 0;
  EXPECT_DOUBLE_EQ(forward_flops(variants[1].config, 1, T) - forward_flops(same_width, 1, T),
                   6.0 * variants[1].config.siaf_terms * T * variants[1].config.intermediate_size * L);
  // Equal parameter counts: the variants' FLOPs are within a few percent of each other.
  EXPECT_NEAR(forward_flops(variants[2].config, 1, T) / forward_flops(v, 1, T), 1.0, 0.1);
}

namespace {

// A distillation-shaped objective over token batches: the student's next-token loss plus the
// squared distance of its final hidden states to a frozen teacher's, with a metric. The teacher
// belongs to the objective, never to the Trainer.
class DistillObjective final : public Objective<TokenBatch> {
 public:
  DistillObjective(concord::lm::CausalLM student, concord::lm::CausalLM teacher)
      : student_(student), teacher_(teacher), next_token_(student) {
    teacher_->eval();
  }
  int64_t count(const TokenBatch& b) const override { return b.target_tokens(); }
  LossSum loss(const TokenBatch& b) override {
    LossSum out = next_token_.loss(b);
    at::Tensor target;
    {
      at::NoGradGuard no_grad;
      target = teacher_->hidden_states(b.input_ids);
    }
    const at::Tensor mse = (student_->hidden_states(b.input_ids) - target).pow(2).mean(-1).sum();
    out.sum = out.sum + mse;
    out.metrics["distill/mse"] = {mse.item<double>(), static_cast<double>(b.input_ids.numel())};
    return out;
  }

 private:
  concord::lm::CausalLM student_, teacher_;
  NextTokenObjective next_token_;
};

concord::lm::CausalLM copy_model(concord::lm::CausalLM m) {
  return concord::lm::CausalLM(std::dynamic_pointer_cast<concord::lm::CausalLMImpl>(m->clone()));
}

}  // namespace

// Groups take their own rates (the embedding at rate 0 stays as it was, the rest moves), a
// frozen teacher used by the objective is never touched, and the objective's metrics reach
// metrics.jsonl under train/ and eval/.
TEST(Trainer, ParameterGroupsAndFrozenModules) {
  const auto& data = corpus_blocks();
  auto student = fresh_model("llama", 3);
  auto teacher = fresh_model("llama", 4);
  const auto teacher_before = copy_model(teacher);
  const auto student_before = copy_model(student);
  const std::vector<NamedModule> modules{{"student", student.ptr()}};
  ParamGroup frozen_embedding = parameter_group(
      modules, "embedding", [](const std::string& n) { return n == "student.embed.weight"; });
  frozen_embedding.lr = 0.0;
  ParamGroup rest = parameter_group(modules, "rest",
                                    [](const std::string& n) { return n != "student.embed.weight"; });
  ASSERT_EQ(frozen_embedding.params.size(), 1u);
  TrainerOptions o = quiet_options(3);
  Trainer trainer(modules, o, {frozen_embedding, rest});
  DistillObjective objective(student, teacher);
  SampledBatches<concord::data::PretrainDataset> train(data, {4, true, 2});
  SampledBatches<concord::data::PretrainDataset> eval(data, {4, false});
  TempDir tmp;
  concord::RunDirectory rd(tmp / "run");
  trainer.fit(objective, train, &eval, &rd);

  EXPECT_TRUE(torch::equal(student->embed->weight, student_before->embed->weight));
  auto before = student_before->named_parameters();
  for (const auto& item : student->named_parameters()) {
    if (item.key() == "embed.weight") continue;
    EXPECT_FALSE(torch::equal(item.value(), before[item.key()])) << item.key() << " did not move";
  }
  EXPECT_TRUE(weights_equal(teacher, teacher_before));
  for (const auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined());
  EXPECT_FALSE(teacher->is_training());
  const auto records = concord::read_metrics(rd.file("metrics.jsonl"));
  EXPECT_EQ(concord::metric_series(records, "train/distill/mse").size(), 3u);
  EXPECT_EQ(concord::metric_series(records, "eval/distill/mse").size(), 1u);
  EXPECT_EQ(concord::metric_series(records, "eval/perplexity").size(), 0u);  // not an NLL

  // A parameter outside the trained modules cannot be in a group: no checkpoint would hold it.
  ParamGroup stray = parameter_group({{"teacher", teacher.ptr()}}, "stray");
  EXPECT_THROW(Trainer(modules, o, {stray}), concord::Error);
}

// The gradient seam: the hook runs once a step, after every micro-batch's backward and before
// clipping, with every gradient; what it does to them is what clipping and AdamW see.
TEST(Trainer, GradientHookRunsBetweenBackwardAndClipping) {
  const auto& data = corpus_blocks();
  auto a = fresh_model("pangu_pi", 5);
  auto b = copy_model(a);
  TrainerOptions o = quiet_options(1);
  o.warmup_steps = 0;
  o.grad_accum_steps = 2;
  o.max_grad_norm = 0;  // clipping off: the reported norm is the hooked gradients' norm
  Trainer plain({{"model", a.ptr()}}, o), hooked({{"model", b.ptr()}}, o);
  NextTokenObjective la(a), lb(b);
  int calls = 0;
  size_t seen = 0;
  hooked.set_gradient_hook([&](const std::vector<at::Tensor>& params) {
    ++calls;
    seen = params.size();
    for (const auto& p : params) p.mutable_grad().mul_(2.0);
  });
  const std::vector<TokenBatch> batches{to_token_batch(data.get_batch({0, 1})),
                                        to_token_batch(data.get_batch({2, 3}))};
  const auto s1 = plain.train_step(la, batches);
  const auto s2 = hooked.train_step(lb, batches);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen, a->parameters().size());
  EXPECT_NEAR(s2.grad_norm, 2.0 * s1.grad_norm, 1e-6 * s1.grad_norm);
  EXPECT_DOUBLE_EQ(s1.loss, s2.loss);
}

namespace {

// A policy with a value head, as PPO trains them: next-token loss plus the value head's squared
// error to a fixed target, so both modules learn.
class PolicyValueObjective final : public Objective<TokenBatch> {
 public:
  PolicyValueObjective(concord::lm::CausalLM policy, torch::nn::Linear value)
      : policy_(policy), value_(value), next_token_(policy) {}
  int64_t count(const TokenBatch& b) const override { return b.target_tokens(); }
  LossSum loss(const TokenBatch& b) override {
    LossSum out = next_token_.loss(b);
    const at::Tensor v = value_->forward(policy_->hidden_states(b.input_ids)).squeeze(-1);
    out.sum = out.sum + (v - 0.5).pow(2).sum();
    return out;
  }

 private:
  concord::lm::CausalLM policy_;
  torch::nn::Linear value_;
  NextTokenObjective next_token_;
};

}  // namespace

// Two named modules in one checkpoint: an interrupted run resumes to bit-for-bit the weights
// of both, and a run with other modules refuses the checkpoint.
TEST(Trainer, SeveralModulesCheckpointAndResumeBitExact) {
  const auto& data = corpus_blocks();
  TempDir tmp;
  TrainerOptions o = quiet_options(6);
  o.checkpoint_every = 3;
  const concord::data::SamplerOptions sampling{4, true, 13};
  auto make = [&](uint64_t seed) {
    auto policy = fresh_model("llama", seed);
    torch::nn::Linear value(32, 1);
    return std::make_pair(policy, value);
  };
  auto [full_policy, full_value] = make(7);
  {
    SampledBatches<concord::data::PretrainDataset> train(data, sampling);
    Trainer t({{"policy", full_policy.ptr()}, {"value_head", full_value.ptr()}}, o);
    PolicyValueObjective objective(full_policy, full_value);
    concord::RunDirectory rd(tmp / "full");
    t.fit(objective, train, nullptr, &rd);
  }
  const fs::path step3 = tmp / "full" / "checkpoints" / "step-00000003";
  EXPECT_TRUE(fs::exists(step3 / "modules" / "policy.safetensors"));
  EXPECT_TRUE(fs::exists(step3 / "modules" / "value_head.safetensors"));

  auto [policy, value] = make(99);
  {
    SampledBatches<concord::data::PretrainDataset> train(data, sampling);
    Trainer t({{"policy", policy.ptr()}, {"value_head", value.ptr()}}, o);
    PolicyValueObjective objective(policy, value);
    t.restore(step3, train);
    EXPECT_EQ(t.step(), 3);
    concord::RunDirectory rd(tmp / "resumed");
    t.fit(objective, train, nullptr, &rd);
  }
  EXPECT_TRUE(weights_equal(full_policy, policy)) << max_weight_diff(full_policy, policy);
  EXPECT_TRUE(torch::equal(full_value->weight, value->weight));
  EXPECT_TRUE(torch::equal(full_value->bias, value->bias));

  auto other = fresh_model("llama", 1);
  Trainer only_policy({{"policy", other.ptr()}}, o);
  SampledBatches<concord::data::PretrainDataset> train(data, sampling);
  try {
    only_policy.restore(step3, train);
    FAIL() << "a checkpoint with another set of modules must be refused";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find("value_head"), std::string::npos) << e.what();
  }
}

// Autocast is the trainer's option, not a guess from where the model lives: precision bf16
// alone changes nothing for CPU tensors (bit-identical to fp32), and with autocast_cpu the CPU
// matmuls run in bf16, the loss tracking fp32's while the weights stay fp32.
TEST(Trainer, AutocastIsAnOption) {
  const auto& data = corpus_blocks();
  auto m32 = fresh_model("llama", 8);
  auto m16 = copy_model(m32);
  auto mcpu = copy_model(m32);
  TrainerOptions o32 = quiet_options(4);
  TrainerOptions o16 = o32;
  o16.precision = "bf16";
  TrainerOptions ocpu = o16;
  ocpu.autocast_cpu = true;
  Trainer t32({{"model", m32.ptr()}}, o32), t16({{"model", m16.ptr()}}, o16),
      tcpu({{"model", mcpu.ptr()}}, ocpu);
  NextTokenObjective l32(m32), l16(m16), lcpu(mcpu);
  std::vector<double> loss32, losscpu;
  for (int64_t s = 0; s < 4; ++s) {
    const auto batch = to_token_batch(data.get_batch({2 * s, 2 * s + 1}));
    loss32.push_back(t32.train_step(l32, {batch}).loss);
    EXPECT_DOUBLE_EQ(t16.train_step(l16, {batch}).loss, loss32.back());
    losscpu.push_back(tcpu.train_step(lcpu, {batch}).loss);
  }
  EXPECT_TRUE(weights_equal(m32, m16));
  bool differs = false;
  for (size_t i = 0; i < loss32.size(); ++i) {
    EXPECT_NEAR(losscpu[i], loss32[i], 0.05 * loss32[i]) << i;
    differs |= losscpu[i] != loss32[i];
  }
  EXPECT_TRUE(differs) << "autocast_cpu had no effect";
  for (const auto& p : mcpu->parameters()) EXPECT_EQ(p.scalar_type(), at::kFloat);
  TrainerOptions bad = o32;
  bad.autocast_cpu = true;
  EXPECT_THROW(bad.validate(), concord::Error);
}
