// Tests of nn::FeatureCapture (concord/nn/feature_capture.h): captured features against the
// values computed by hand, gradients through captured features against finite differences and
// a direct computation, a teacher and a student captured at once, nested and out-of-order
// scopes, threads, repeated calls, and the errors (unknown path, container, a module that does
// not report).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/nn/attention.h"
#include "concord/nn/augmented_shortcut.h"
#include "concord/nn/feature_capture.h"
#include "concord/nn/feed_forward.h"
#include "concord/nn/norm.h"
#include "concord/nn/siaf.h"
#include "test_support.h"

using concord::testing::max_abs_diff;

namespace cn = concord::nn;

namespace {

// Two residual stages of Concord modules, then a LibTorch Linear called directly (so "head"
// does not report its output):
//   h1 = x + ff1(x),  h2 = h1 + ff2(norm(h1)),  y = head(h2)
struct TinyNetImpl : torch::nn::Cloneable<TinyNetImpl> {
  TinyNetImpl() { reset(); }
  void reset() override {
    ff1 = register_module("ff1", cn::FeedForward(cn::FeedForwardOptions(8, 12)));
    norm = register_module("norm", cn::RMSNorm(8));
    ff2 = register_module(
        "ff2", cn::FeedForward(cn::FeedForwardOptions(8, 12).gated(false).bias(true).activation(
                   cn::FeedForwardActivation::GeluTanh)));
    head = register_module("head", torch::nn::Linear(8, 3));
    torch::NoGradGuard g;
    norm->weight.uniform_(0.5, 1.5);  // not all ones, so a wrong norm weight would show
  }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h1 = x + ff1->forward(x);
    const at::Tensor h2 = h1 + ff2->forward(norm->forward(h1));
    return head->forward(h2);
  }
  cn::FeedForward ff1{nullptr}, ff2{nullptr};
  cn::RMSNorm norm{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(TinyNet);

TinyNet make_net(uint64_t seed, at::ScalarType dtype = at::kFloat) {
  torch::manual_seed(seed);
  TinyNet net;
  net->to(dtype);
  return net;
}

// The stages written out with raw ATen ops (no module forward, so nothing is recorded).
struct ByHand {
  at::Tensor ff1_fc_in, ff1, h1, norm, ff2_fc_out, ff2, h2, y;
};

ByHand by_hand(const TinyNet& net, const at::Tensor& x) {
  ByHand r;
  r.ff1_fc_in = at::linear(x, net->ff1->fc_in->weight);
  const at::Tensor gate = r.ff1_fc_in.narrow(-1, 0, 12), up = r.ff1_fc_in.narrow(-1, 12, 12);
  r.ff1 = at::linear(gate * at::sigmoid(gate) * up, net->ff1->fc_out->weight);
  r.h1 = x + r.ff1;
  r.norm = net->norm->weight * r.h1 / at::sqrt(r.h1.pow(2).mean(-1, true) + 1e-6);
  const at::Tensor a = at::linear(r.norm, net->ff2->fc_in->weight, net->ff2->fc_in->bias);
  r.ff2_fc_out = at::linear(at::gelu(a, "tanh"), net->ff2->fc_out->weight, net->ff2->fc_out->bias);
  r.ff2 = r.ff2_fc_out;
  r.h2 = r.h1 + r.ff2;
  r.y = at::linear(r.h2, net->head->weight, net->head->bias);
  return r;
}

// The message of the concord::Error `f` throws (fails the test when it throws nothing).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const concord::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no concord::Error thrown";
  return {};
}

}  // namespace

TEST(FeatureCapture, CapturedFeaturesEqualTheStagesComputedByHand) {
  TinyNet net = make_net(1);
  const at::Tensor x = torch::randn({2, 5, 8});
  at::Tensor y;
  cn::FeatureCapture capture(net, {"ff1", "ff1.fc_in", "norm", "ff2", "ff2.fc_out"});
  y = net->forward(x);
  ASSERT_EQ(cn::detail::innermost_capture, &capture);
  const ByHand want = by_hand(net, x);
  EXPECT_LT(max_abs_diff(capture.get("ff1.fc_in"), want.ff1_fc_in), 1e-6);
  EXPECT_LT(max_abs_diff(capture.get("ff1"), want.ff1), 1e-6);
  EXPECT_LT(max_abs_diff(capture.get("norm"), want.norm), 1e-5);
  EXPECT_LT(max_abs_diff(capture.get("ff2.fc_out"), want.ff2_fc_out), 1e-5);
  EXPECT_LT(max_abs_diff(capture.get("ff2"), want.ff2), 1e-5);
  EXPECT_LT(max_abs_diff(y, want.y), 1e-5);
  // One forward, one output per path (a module that reported twice would show here).
  for (const auto& path : capture.paths()) EXPECT_EQ(capture.count(path), 1u) << path;
  EXPECT_TRUE(capture.get("ff1").requires_grad());  // the graph is kept by default
}

TEST(FeatureCapture, GradientsFlowThroughCapturedFeaturesToTheParameters) {
  TinyNet net = make_net(2, at::kDouble);
  const at::Tensor x = torch::randn({2, 4, 8}, at::kDouble);
  const at::Tensor r1 = torch::randn({2, 4, 8}, at::kDouble);
  const at::Tensor r2 = torch::randn({2, 4, 24}, at::kDouble);
  // L = <ff1(x), R1> + <fc_in(x), R2>: a loss of the captured features alone. (Features past
  // the RMSNorm are left out: it computes its statistics in fp32, too coarse for differences.)
  auto loss_of = [&](bool with_grad) {
    torch::AutoGradMode mode(with_grad);
    cn::FeatureCapture capture(net, {"ff1", "ff1.fc_in"});
    net->forward(x);
    return (capture.get("ff1") * r1).sum() + (capture.get("ff1.fc_in") * r2).sum();
  };
  loss_of(true).backward();
  // Parameters behind the captured features get gradients; those after them none.
  ASSERT_TRUE(net->ff1->fc_in->weight.grad().defined());
  ASSERT_TRUE(net->ff1->fc_out->weight.grad().defined());
  EXPECT_FALSE(net->norm->weight.grad().defined());
  EXPECT_FALSE(net->ff2->fc_in->weight.grad().defined());
  EXPECT_FALSE(net->head->weight.grad().defined());
  // Central differences on a few entries of both parameters.
  const double eps = 1e-6;
  for (const at::Tensor& p : {net->ff1->fc_in->weight, net->ff1->fc_out->weight}) {
    const at::Tensor flat = p.data().view({-1});
    const at::Tensor grad = p.grad().view({-1});
    for (int64_t i : {int64_t{0}, flat.numel() / 3, flat.numel() - 1}) {
      const double saved = flat[i].item<double>();
      flat[i].fill_(saved + eps);
      const double up = loss_of(false).item<double>();
      flat[i].fill_(saved - eps);
      const double down = loss_of(false).item<double>();
      flat[i].fill_(saved);
      const double fd = (up - down) / (2 * eps);
      EXPECT_NEAR(grad[i].item<double>(), fd, 1e-6 * std::max(1.0, std::abs(fd))) << i;
    }
  }
}

TEST(FeatureCapture, DetachedFeaturesKeepNoGraphAndLeaveTheModelsGraphAlone) {
  TinyNet net = make_net(3, at::kDouble);
  const at::Tensor x = torch::randn({3, 8}, at::kDouble);
  at::Tensor y;
  {
    cn::FeatureCapture capture(net, cn::FeatureCaptureOptions({"ff1", "ff2"}).detach(true));
    y = net->forward(x);
    EXPECT_FALSE(capture.get("ff1").requires_grad());
    EXPECT_EQ(capture.get("ff2").grad_fn(), nullptr);
    EXPECT_LT(max_abs_diff(capture.get("ff2"), by_hand(net, x).ff2), 1e-5);  // RMSNorm: fp32 stats
  }
  y.sum().backward();
  const at::Tensor with_capture = net->ff1->fc_in->weight.grad().clone();
  net->zero_grad();
  net->forward(x).sum().backward();
  EXPECT_TRUE(at::equal(net->ff1->fc_in->weight.grad(), with_capture));
}

TEST(FeatureCapture, TeacherAndStudentAreCapturedAtOnce) {
  // KOALA's shape: a frozen teacher read without gradients, a student whose features take part
  // in the loss. Same architecture, so the same paths, on distinct module objects.
  TinyNet teacher = make_net(4, at::kDouble);
  TinyNet student = make_net(5, at::kDouble);
  for (auto& p : teacher->parameters()) p.set_requires_grad(false);
  const at::Tensor x = torch::randn({2, 3, 8}, at::kDouble);
  const std::vector<std::string> paths = {"ff1", "ff2"};
  {
    cn::FeatureCapture from_teacher(teacher, cn::FeatureCaptureOptions(paths).detach(true));
    cn::FeatureCapture from_student(student, paths);
    {
      torch::NoGradGuard no_grad;
      teacher->forward(x);
    }
    student->forward(x);
    const ByHand t = by_hand(teacher, x), s = by_hand(student, x);
    for (const auto& [path, tv, sv] :
         {std::tuple{"ff1", t.ff1, s.ff1}, std::tuple{"ff2", t.ff2, s.ff2}}) {
      // Each capture saw its own model only (the two models' features differ). ff2 is past the
      // RMSNorm, whose statistics are fp32.
      EXPECT_LT(max_abs_diff(from_teacher.get(path), tv), 1e-5) << path;
      EXPECT_LT(max_abs_diff(from_student.get(path), sv), 1e-5) << path;
      EXPECT_GT(max_abs_diff(tv, sv), 1e-3) << path;
      EXPECT_EQ(from_teacher.count(path), 1u);
      EXPECT_EQ(from_student.count(path), 1u);
    }
    at::Tensor loss = at::zeros({}, at::kDouble);
    for (const auto& path : paths) {
      loss = loss + at::mse_loss(from_student.get(path), from_teacher.get(path));
    }
    loss.backward();
  }
  // The same loss computed directly from the student's modules, without any capture.
  at::Tensor t1, t2;
  {
    torch::NoGradGuard no_grad;
    t1 = teacher->ff1->forward(x);
    t2 = teacher->ff2->forward(teacher->norm->forward(x + t1));
  }
  const at::Tensor s1 = student->ff1->forward(x);
  const at::Tensor s2 = student->ff2->forward(student->norm->forward(x + s1));
  const at::Tensor direct = at::mse_loss(s1, t1) + at::mse_loss(s2, t2);
  const auto params = student->parameters();
  std::vector<at::Tensor> with_grad;
  for (const auto& p : params) {
    if (p.grad().defined()) with_grad.push_back(p);
  }
  // Everything but the head (after the captured features) gets a gradient.
  EXPECT_EQ(with_grad.size(), params.size() - 2);
  const auto want = torch::autograd::grad({direct}, with_grad);
  for (size_t i = 0; i < with_grad.size(); ++i) {
    EXPECT_LT(max_abs_diff(with_grad[i].grad(), want[i]), 1e-12) << i;
  }
  for (const auto& p : teacher->parameters()) EXPECT_FALSE(p.grad().defined());
}

TEST(FeatureCapture, NestedScopesEachRecordTheirOwnPaths) {
  TinyNet net = make_net(6);
  const at::Tensor x1 = torch::randn({4, 8}), x2 = torch::randn({4, 8});
  cn::FeatureCapture outer(net, {"ff1", "ff2"});
  {
    cn::FeatureCapture inner(net, {"ff2", "norm"});
    net->forward(x1);
    const ByHand want = by_hand(net, x1);
    EXPECT_LT(max_abs_diff(outer.get("ff2"), want.ff2), 1e-5);
    EXPECT_LT(max_abs_diff(inner.get("ff2"), want.ff2), 1e-5);
    EXPECT_LT(max_abs_diff(inner.get("norm"), want.norm), 1e-5);
    EXPECT_LT(max_abs_diff(outer.get("ff1"), want.ff1), 1e-6);
  }
  ASSERT_EQ(cn::detail::innermost_capture, &outer);
  net->forward(x2);  // only the outer scope is still active
  EXPECT_LT(max_abs_diff(outer.get("ff2"), by_hand(net, x2).ff2), 1e-5);
  EXPECT_EQ(outer.count("ff2"), 1u);  // replaced, not appended
}

TEST(FeatureCapture, ScopesMayEndOutOfOrder) {
  TinyNet net = make_net(7);
  const at::Tensor x = torch::randn({2, 8});
  auto first = std::make_unique<cn::FeatureCapture>(net, std::vector<std::string>{"ff1"});
  auto second = std::make_unique<cn::FeatureCapture>(net, std::vector<std::string>{"ff2"});
  first.reset();  // not the innermost: unlinked from the middle of the list
  ASSERT_EQ(cn::detail::innermost_capture, second.get());
  net->forward(x);
  EXPECT_EQ(second->count("ff2"), 1u);
  second.reset();
  EXPECT_EQ(cn::detail::innermost_capture, nullptr);
  net->forward(x);  // nothing active: the reports return at once
}

TEST(FeatureCapture, KeepAllHoldsEveryCallAndClearDropsThem) {
  TinyNet net = make_net(8);
  const at::Tensor x1 = torch::randn({3, 8}), x2 = torch::randn({3, 8});
  cn::FeatureCapture every(net, cn::FeatureCaptureOptions({"norm"}).keep_all(true));
  cn::FeatureCapture latest(net, {"norm"});
  net->forward(x1);
  net->forward(x2);
  ASSERT_EQ(every.count("norm"), 2u);
  EXPECT_LT(max_abs_diff(every.all("norm")[0], by_hand(net, x1).norm), 1e-5);
  EXPECT_LT(max_abs_diff(every.all("norm")[1], by_hand(net, x2).norm), 1e-5);
  EXPECT_TRUE(at::equal(every.get("norm"), every.all("norm")[1]));
  ASSERT_EQ(latest.count("norm"), 1u);
  EXPECT_TRUE(at::equal(latest.get("norm"), every.all("norm")[1]));
  every.clear();
  EXPECT_EQ(every.count("norm"), 0u);
  EXPECT_NE(error_of([&] { every.get("norm"); }).find("recorded no output"), std::string::npos);
}

TEST(FeatureCapture, OtherThreadsAreNotSeen) {
  TinyNet net = make_net(9);
  const at::Tensor x = torch::randn({2, 8});
  cn::FeatureCapture here(net, {"ff1"});
  size_t seen_there = 0;
  std::thread([&] {
    EXPECT_EQ(cn::detail::innermost_capture, nullptr);
    cn::FeatureCapture there(net, {"ff1"});
    net->forward(x);
    seen_there = there.count("ff1");
  }).join();
  EXPECT_EQ(seen_there, 1u);
  EXPECT_EQ(here.count("ff1"), 0u);
}

TEST(FeatureCapture, UnknownPathsAndContainersAreErrorsNamingTheValidPaths) {
  TinyNet net = make_net(10);
  std::string e = error_of([&] { cn::FeatureCapture c(net, {"ff1", "ff3"}); });
  EXPECT_NE(e.find("no module 'ff3'"), std::string::npos) << e;
  EXPECT_NE(e.find("closest: 'ff1', 'ff2'"), std::string::npos) << e;
  e = error_of([&] { cn::FeatureCapture c(net, {"ff1.fc_inn"}); });
  EXPECT_NE(e.find("closest: 'ff1.fc_in'"), std::string::npos) << e;
  e = error_of([&] { cn::FeatureCapture c(net, {"norm", "norm"}); });
  EXPECT_NE(e.find("'norm' is listed twice"), std::string::npos) << e;
  // A failed construction leaves nothing active.
  EXPECT_EQ(cn::detail::innermost_capture, nullptr);

  torch::nn::Module holder;
  auto list =
      holder.register_module("blocks", torch::nn::ModuleList(cn::RMSNorm(4), cn::RMSNorm(4)));
  e = error_of([&] { cn::FeatureCapture c(holder, {"blocks"}); });
  EXPECT_NE(e.find("container"), std::string::npos) << e;
  EXPECT_NE(e.find("'blocks.0'"), std::string::npos) << e;
  // Its elements are capturable ("" is the root, here a plain Module: nothing reports for it).
  cn::FeatureCapture c(holder, {"blocks.1", ""});
  list->ptr<cn::RMSNormImpl>(1)->forward(torch::ones({1, 4}));
  EXPECT_EQ(c.count("blocks.1"), 1u);
  EXPECT_EQ(c.count(""), 0u);
}

TEST(FeatureCapture, ReadingAPathThatDoesNotReportSaysWhy) {
  TinyNet net = make_net(11);
  cn::FeatureCapture capture(net, {"head", "ff1"});
  net->forward(torch::randn({2, 8}));
  EXPECT_EQ(capture.count("ff1"), 1u);
  const std::string e = error_of([&] { capture.get("head"); });
  EXPECT_NE(e.find("'head' (torch::nn::LinearImpl) recorded no output"), std::string::npos) << e;
  EXPECT_NE(e.find("does not report"), std::string::npos) << e;
  const std::string other = error_of([&] { capture.get("norm"); });
  EXPECT_NE(other.find("'norm' is not captured here (captured: 'head', 'ff1')"), std::string::npos)
      << other;
}

TEST(FeatureCapture, EveryConcordModuleReportsItsOutputOnce) {
  torch::manual_seed(12);
  const at::Tensor x = torch::randn({2, 6, 16});
  auto check = [&](const std::string& what, const at::Tensor& y,
                   const cn::FeatureCapture& capture) {
    ASSERT_EQ(capture.count(""), 1u) << what;
    EXPECT_TRUE(at::equal(capture.get(""), y)) << what;
  };
  {
    cn::RMSNorm m(16);
    cn::FeatureCapture c(m, {""});
    check("RMSNorm", m->forward(x), c);
  }
  {
    cn::AugmentedShortcut m(cn::AugmentedShortcutOptions(16).paths(2).reduction(4));
    cn::FeatureCapture c(m, {""});
    check("AugmentedShortcut", m->forward(x), c);
  }
  for (int64_t k : {0, 3}) {
    cn::SeriesInformedActivation m(cn::SeriesInformedActivationOptions(16).neighbour_kernel(k));
    {
      cn::FeatureCapture c(m, {""});
      check("SIAF forward", m->forward(x), c);
    }
    cn::FeatureCapture c(m, {""});
    check("SIAF forward_tokens", m->forward_tokens(x, {}, nullptr), c);
  }
  for (bool gated : {true, false}) {
    cn::FeedForward m(cn::FeedForwardOptions(16, 24).gated(gated).siaf_terms(2));
    cn::FeatureCapture c(m, {"", "fc_in", "fc_out", "siaf"});
    const at::Tensor y = m->forward(x);
    check("FeedForward", y, c);
    EXPECT_TRUE(at::equal(c.get("fc_out"), y));
    EXPECT_LT(max_abs_diff(c.get("fc_in"), at::linear(x, m->fc_in->weight)), 1e-6);
    EXPECT_EQ(c.count("siaf"), 1u);
    EXPECT_EQ(c.get("siaf").size(-1), 24);
  }
  {
    cn::CausalSelfAttention m(cn::CausalSelfAttentionOptions(16, 4).kv_heads(2).rope(false));
    cn::AttentionContext ctx;
    ctx.plain_causal = true;
    cn::FeatureCapture c(m, {"", "qkv", "out"});
    const at::Tensor y = m->forward(x, ctx);
    check("CausalSelfAttention", y, c);
    EXPECT_TRUE(at::equal(c.get("out"), y));
    EXPECT_LT(max_abs_diff(c.get("qkv"), at::linear(x, m->qkv->weight)), 1e-6);
    EXPECT_EQ(c.count("qkv"), 1u);
  }
}
