// Fused attention (flash-style, grouped-query, causal/full, KV-cache offset, segment ids): the
// CPU kernels against the naive matmul-softmax-matmul reference (output and autograd gradients)
// over a sweep of shapes, central-difference gradient checks in fp64, the decode path against
// the last row of the full causal forward, segment ids against data::block_causal_mask, strided
// inputs, input checks, and (with a device) CUDA against the CPU reference.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "concord/core/error.h"
#include "concord/data/collate.h"
#include "concord/ops/attention.h"
#include "compare.h"
#include "gradcheck.h"
#include "test_support.h"

namespace {

using concord::ops::attention;
using concord::ops::attention_reference;
using concord::ops::AttentionOptions;
using concord::testing::expect_close;
using concord::testing::expect_error;

struct AttentionShape {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
};

std::string describe(const AttentionShape& s) {
  return "B=" + std::to_string(s.B) + " Hq=" + std::to_string(s.Hq) +
         " Hkv=" + std::to_string(s.Hkv) + " Tq=" + std::to_string(s.Tq) +
         " Tk=" + std::to_string(s.Tk) + " D=" + std::to_string(s.D) +
         (s.causal ? " causal" : " full");
}

struct AttentionResult {
  torch::Tensor out, dq, dk, dv;
};

template <class Op>
AttentionResult run(Op op, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                    const torch::Tensor& dout, const AttentionOptions& o) {
  auto qv = q.detach().clone().requires_grad_(true);
  auto kv = k.detach().clone().requires_grad_(true);
  auto vv = v.detach().clone().requires_grad_(true);
  torch::Tensor out = op(qv, kv, vv, o);
  out.backward(dout);
  return {out.detach(), qv.grad(), kv.grad(), vv.grad()};
}

struct Inputs {
  torch::Tensor q, k, v, dout;
};

Inputs make_inputs(const AttentionShape& s, torch::ScalarType dtype) {
  auto opts = torch::dtype(dtype);
  // Scores of a few units: softmax rows neither uniform nor one-hot.
  return {torch::randn({s.B, s.Hq, s.Tq, s.D}, opts), torch::randn({s.B, s.Hkv, s.Tk, s.D}, opts),
          torch::randn({s.B, s.Hkv, s.Tk, s.D}, opts), torch::randn({s.B, s.Hq, s.Tq, s.D}, opts)};
}

const AttentionShape kAttentionSweep[] = {
    {1, 1, 1, 1, 1, 64, true},       // T = 1
    {1, 1, 1, 1, 1, 16, false},      //
    {2, 4, 4, 37, 37, 64, true},     // odd T, plain multi-head
    {2, 4, 2, 37, 37, 64, false},    // GQA 2, full
    {1, 8, 2, 130, 130, 128, true},  // GQA 4, D = 128, ragged last blocks
    {1, 4, 1, 65, 65, 24, true},     // multi-query, odd D
    {3, 3, 1, 7, 9, 5, false},       // tiny odd D, Tq != Tk full
    {2, 4, 2, 5, 70, 64, true},      // KV-cache offset: 5 new queries after 65 cached keys
    {1, 2, 1, 17, 150, 24, true},    // offset, odd D
    {1, 2, 2, 64, 64, 64, true},     // exactly one block
    {2, 8, 2, 1, 700, 64, true},     // decode schedule (Tq = 1), split-K
    {1, 4, 4, 1, 90, 128, false},    // decode, full, D = 128
    {2, 3, 1, 1, 77, 5, true},       // decode, GQA 3, D = 5: dot-product and axpy tails
    {1, 2, 2, 1, 331, 44, false},    // decode, D = 44: vector groups + a scalar tail, 3-key tail
};

TEST(Attention, FusedMatchesReferenceFp32Sweep) {
  torch::manual_seed(1);
  for (const AttentionShape& s : kAttentionSweep) {
    const Inputs in = make_inputs(s, torch::kFloat);
    const auto o = AttentionOptions().causal(s.causal);
    ASSERT_TRUE(concord::ops::attention_is_fused(in.q));
    AttentionResult got = run(attention, in.q, in.k, in.v, in.dout, o);
    // Reference in fp64 from the same values: the comparison measures the kernel's fp32 error.
    AttentionResult want =
        run(attention_reference, in.q.to(torch::kDouble), in.k.to(torch::kDouble),
            in.v.to(torch::kDouble), in.dout.to(torch::kDouble), o);
    const std::string what = describe(s);
    expect_close(got.out, want.out, 1e-4, 2e-5, what + " out");
    expect_close(got.dq, want.dq, 1e-4, 1e-4, what + " dq");
    expect_close(got.dk, want.dk, 1e-4, 1e-4, what + " dk");
    expect_close(got.dv, want.dv, 1e-4, 1e-4, what + " dv");
  }
}

TEST(Attention, LongSequenceFp32) {
  torch::manual_seed(2);
  for (bool causal : {true, false}) {
    const AttentionShape s{1, 2, 1, 1024, 1024, 64, causal};
    const Inputs in = make_inputs(s, torch::kFloat);
    const auto o = AttentionOptions().causal(causal);
    AttentionResult got = run(attention, in.q, in.k, in.v, in.dout, o);
    AttentionResult want =
        run(attention_reference, in.q.to(torch::kDouble), in.k.to(torch::kDouble),
            in.v.to(torch::kDouble), in.dout.to(torch::kDouble), o);
    const std::string what = describe(s);
    expect_close(got.out, want.out, 1e-4, 2e-5, what + " out");
    expect_close(got.dq, want.dq, 1e-4, 2e-4, what + " dq");
    expect_close(got.dk, want.dk, 1e-4, 2e-4, what + " dk");
    expect_close(got.dv, want.dv, 1e-4, 2e-4, what + " dv");
  }
}

TEST(Attention, FusedMatchesReferenceFp64WithScaleAndSegments) {
  torch::manual_seed(3);
  for (const AttentionShape& s : kAttentionSweep) {
    const Inputs in = make_inputs(s, torch::kDouble);
    auto o = AttentionOptions().causal(s.causal).scale(0.3);
    if (s.Tq <= s.Tk && s.Tk > 3) {
      // Three packed samples and a padded tail: ids 1, 2, 3 then 0.
      auto seg = torch::zeros({s.B, s.Tk}, torch::kLong);
      const int64_t a = s.Tk / 3, b = 2 * s.Tk / 3, c = s.Tk - 2;
      seg.narrow(1, 0, a).fill_(1);
      seg.narrow(1, a, b - a).fill_(2);
      seg.narrow(1, b, c - b).fill_(3);
      o.segment_ids(seg);
    }
    AttentionResult got = run(attention, in.q, in.k, in.v, in.dout, o);
    AttentionResult want = run(attention_reference, in.q, in.k, in.v, in.dout, o);
    const std::string what = describe(s) + (o.segment_ids().defined() ? " seg" : "");
    expect_close(got.out, want.out, 1e-10, 1e-11, what + " out");
    expect_close(got.dq, want.dq, 1e-10, 1e-10, what + " dq");
    expect_close(got.dk, want.dk, 1e-10, 1e-10, what + " dk");
    expect_close(got.dv, want.dv, 1e-10, 1e-10, what + " dv");
  }
}

// The reference's causal mask by hand: query t of 2 at positions 2 and 3 of 4 keys, scale 1,
// D = 1, q = 1, k = 0 (uniform softmax over allowed keys), v = key index.
TEST(Attention, KnownValuesWithCacheOffset) {
  auto opts = torch::dtype(torch::kDouble);
  auto q = torch::ones({1, 1, 2, 1}, opts), k = torch::zeros({1, 1, 4, 1}, opts);
  auto v = torch::arange(4, opts).view({1, 1, 4, 1});
  auto o = AttentionOptions().causal(true).scale(1.0);
  auto out = attention(q, k, v, o);
  EXPECT_NEAR(out[0][0][0][0].item<double>(), (0 + 1 + 2) / 3.0, 1e-14);  // sees keys 0..2
  EXPECT_NEAR(out[0][0][1][0].item<double>(), (0 + 1 + 2 + 3) / 4.0, 1e-14);
  auto fwd = concord::ops::attention_forward(q, k, v, o);
  EXPECT_NEAR(fwd.lse[0][0][0].item<double>(), std::log(3.0), 1e-14);
  EXPECT_NEAR(fwd.lse[0][0][1].item<double>(), std::log(4.0), 1e-14);
  // Full attention: every query sees all 4 keys.
  auto full = attention(q, k, v, AttentionOptions().scale(1.0));
  EXPECT_NEAR(full[0][0][0][0].item<double>(), 1.5, 1e-14);
}

TEST(Attention, GradcheckFp64) {
  torch::manual_seed(4);
  struct GCase {
    AttentionShape s;
    bool segments;
  };
  const GCase cases[] = {
      {{1, 2, 1, 5, 7, 3, true}, false},  // GQA 2, cache offset 2
      {{2, 2, 2, 4, 4, 2, false}, false},
      {{1, 4, 2, 6, 6, 3, true}, true},   // segments
      {{1, 2, 1, 1, 9, 4, true}, false},  // decode schedule
  };
  for (const GCase& c : cases) {
    const Inputs in = make_inputs(c.s, torch::kDouble);
    auto o = AttentionOptions().causal(c.s.causal);
    if (c.segments) o.segment_ids(torch::tensor({{1, 1, 2, 2, 2, 0}}, torch::kLong));
    ASSERT_TRUE(concord::ops::attention_is_fused(in.q));
    auto r = concord::testing::gradcheck(
        [o](const std::vector<torch::Tensor>& t) { return attention(t[0], t[1], t[2], o); },
        {in.q, in.k, in.v});
    EXPECT_TRUE(r.ok) << describe(c.s) << ": " << r.first_failure;
  }
}

// Decode of the last token equals the last row of the full causal forward, also when the cache
// is a narrowed view of a bigger preallocated buffer (read in place, not copied).
TEST(Attention, DecodeEqualsLastRowOfCausalForward) {
  torch::manual_seed(5);
  for (int64_t Hkv : {1, 2, 8}) {
    for (int64_t T : {1, 33, 300, 1100}) {
      const int64_t B = 2, Hq = 8, D = 64, cap = T + 17;
      auto q = torch::randn({B, Hq, T, D});
      auto kbuf = torch::randn({B, Hkv, cap, D}), vbuf = torch::randn({B, Hkv, cap, D});
      auto k = kbuf.narrow(2, 0, T), v = vbuf.narrow(2, 0, T);
      ASSERT_FALSE(k.is_contiguous());
      const auto o = AttentionOptions().causal(true);
      auto full = attention(q, k.contiguous(), v.contiguous(), o);
      auto last = concord::ops::attention_decode(q.narrow(2, T - 1, 1), k, v, o);
      expect_close(last, full.narrow(2, T - 1, 1), 1e-5, 2e-6,
                   "Hkv=" + std::to_string(Hkv) + " T=" + std::to_string(T));
    }
  }
}

// Segment ids give what data::block_causal_mask + an additive mask give the naive path.
TEST(Attention, SegmentIdsMatchBlockCausalMask) {
  torch::manual_seed(6);
  const int64_t B = 2, H = 4, T = 150, D = 32;
  auto seg = torch::tensor({1, 1, 1, 2, 2, 3}, torch::kLong).repeat_interleave(25).view({1, T});
  seg = torch::cat({seg, torch::roll(seg, 40, 1)});
  seg[1].narrow(0, 140, 10).fill_(0);  // padding tail
  auto q = torch::randn({B, H, T, D}), k = torch::randn({B, H, T, D}), v = torch::randn({B, H, T, D});
  auto mask = concord::data::block_causal_mask(seg);  // [B, 1, T, T]
  auto scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(D)) +
                concord::data::additive_mask(mask);
  auto want = torch::matmul(torch::softmax(scores, -1), v);
  auto got = attention(q, k, v, AttentionOptions().causal(true).segment_ids(seg));
  expect_close(got, want, 1e-4, 2e-5, "segment ids vs block_causal_mask");
}

// [B, T, H, D] activations viewed as [B, H, T, D] are read in place.
TEST(Attention, StridedInputs) {
  torch::manual_seed(7);
  auto q = torch::randn({2, 45, 4, 64}).transpose(1, 2);
  auto k = torch::randn({2, 45, 2, 64}).transpose(1, 2);
  auto v = torch::randn({2, 45, 2, 64}).transpose(1, 2);
  auto dout = torch::randn({2, 4, 45, 64});
  const auto o = AttentionOptions().causal(true);
  AttentionResult got = run(attention, q, k, v, dout, o);
  AttentionResult want =
      run(attention_reference, q.contiguous(), k.contiguous(), v.contiguous(), dout, o);
  expect_close(got.out, want.out, 1e-4, 2e-5, "out");
  expect_close(got.dq, want.dq, 1e-4, 1e-4, "dq");
  expect_close(got.dk, want.dk, 1e-4, 1e-4, "dk");
  expect_close(got.dv, want.dv, 1e-4, 1e-4, "dv");
}

TEST(Attention, ForwardBackwardFunctionsMatchAutograd) {
  torch::manual_seed(8);
  const AttentionShape s{2, 4, 2, 40, 50, 24, true};
  const Inputs in = make_inputs(s, torch::kDouble);
  const auto o = AttentionOptions().causal(true);
  AttentionResult want = run(attention_reference, in.q, in.k, in.v, in.dout, o);
  auto fwd = concord::ops::attention_forward(in.q, in.k, in.v, o);
  expect_close(fwd.out, want.out, 1e-12, 1e-12, "out");
  // lse against the logsumexp of the reference's masked scores.
  auto scores = torch::matmul(in.q, in.k.repeat_interleave(2, 1).transpose(-2, -1)) /
                std::sqrt(24.0);
  auto qpos = torch::arange(s.Tq).add(s.Tk - s.Tq).view({-1, 1});
  auto allowed = torch::arange(s.Tk).view({1, -1}) <= qpos;
  expect_close(fwd.lse, torch::logsumexp(scores.masked_fill(allowed.logical_not(), -INFINITY), -1),
               1e-12, 1e-12, "lse");
  auto g = concord::ops::attention_backward(in.dout, in.q, in.k, in.v, fwd.out, fwd.lse, o);
  expect_close(g.dq, want.dq, 1e-10, 1e-10, "dq");
  expect_close(g.dk, want.dk, 1e-10, 1e-10, "dk");
  expect_close(g.dv, want.dv, 1e-10, 1e-10, "dv");
}

TEST(Attention, BackwardIsDeterministic) {
  torch::manual_seed(9);
  const AttentionShape s{1, 4, 1, 300, 300, 64, true};
  const Inputs in = make_inputs(s, torch::kFloat);
  const auto o = AttentionOptions().causal(true);
  auto fwd = concord::ops::attention_forward(in.q, in.k, in.v, o);
  auto g1 = concord::ops::attention_backward(in.dout, in.q, in.k, in.v, fwd.out, fwd.lse, o);
  auto g2 = concord::ops::attention_backward(in.dout, in.q, in.k, in.v, fwd.out, fwd.lse, o);
  EXPECT_TRUE(torch::equal(g1.dq, g2.dq));
  EXPECT_TRUE(torch::equal(g1.dk, g2.dk));
  EXPECT_TRUE(torch::equal(g1.dv, g2.dv));
}

TEST(Attention, LargeScoresStayFinite) {
  // Scores in the hundreds: exp overflows unless the running max is subtracted.
  torch::manual_seed(10);
  auto q = 30 * torch::randn({1, 2, 70, 16}), k = 30 * torch::randn({1, 2, 70, 16});
  auto v = torch::randn({1, 2, 70, 16}), dout = torch::randn({1, 2, 70, 16});
  const auto o = AttentionOptions().causal(true);
  AttentionResult got = run(attention, q, k, v, dout, o);
  AttentionResult want = run(attention_reference, q.to(torch::kDouble), k.to(torch::kDouble),
                             v.to(torch::kDouble), dout.to(torch::kDouble), o);
  expect_close(got.out, want.out, 1e-4, 1e-4, "out");
  expect_close(got.dv, want.dv, 1e-4, 1e-4, "dv");
}

// No queries (or no batch): empty outputs, and keys that nobody sees get zero gradients.
TEST(Attention, EmptyQueriesAndBatch) {
  for (const AttentionShape& s :
       {AttentionShape{2, 4, 2, 0, 9, 16, false}, AttentionShape{0, 4, 2, 5, 9, 16, true}}) {
    const Inputs in = make_inputs(s, torch::kFloat);
    AttentionResult got =
        run(attention, in.q, in.k, in.v, in.dout, AttentionOptions().causal(s.causal));
    EXPECT_EQ(got.out.sizes(), in.q.sizes()) << describe(s);
    EXPECT_EQ(got.dk.sizes(), in.k.sizes()) << describe(s);
    EXPECT_TRUE(torch::equal(got.dk, torch::zeros_like(in.k))) << describe(s);
    EXPECT_TRUE(torch::equal(got.dv, torch::zeros_like(in.v))) << describe(s);
  }
}

TEST(Attention, InputChecks) {
  auto q = torch::randn({2, 4, 8, 16}), k = torch::randn({2, 2, 10, 16}),
       v = torch::randn({2, 2, 10, 16});
  expect_error([&] { attention(q[0], k, v); }, "q must be [B, Hq, Tq, D], got [4, 8, 16]");
  expect_error([&] { attention(q, k, torch::randn({2, 2, 9, 16})); },
               "v must have k's shape [2, 2, 10, 16]");
  expect_error([&] { attention(q, torch::randn({2, 3, 10, 16}), torch::randn({2, 3, 10, 16})); },
               "Hq = 4 must be a multiple of Hkv = 3");
  expect_error([&] { attention(q, torch::randn({1, 2, 10, 16}), torch::randn({1, 2, 10, 16})); },
               "q has batch 2 but k has 1");
  expect_error([&] { attention(q, torch::randn({2, 2, 10, 8}), torch::randn({2, 2, 10, 8})); },
               "q has head dim 16 but k has 8");
  expect_error([&] { attention(q, k.to(torch::kDouble), v.to(torch::kDouble)); },
               "share a dtype");
  expect_error([&] { attention(q.to(torch::kLong), k.to(torch::kLong), v.to(torch::kLong)); },
               "floating point");
  expect_error([&] { attention(q, k.narrow(2, 0, 0), v.narrow(2, 0, 0)); }, "Tk = 0");
  expect_error([&] { attention(torch::randn({2, 4, 12, 16}), k, v, AttentionOptions().causal(true)); },
               "causal attention needs Tq <= Tk");
  expect_error([&] { attention(q, k, v, AttentionOptions().segment_ids(torch::zeros({2, 8}, torch::kLong))); },
               "segment_ids must be [B, Tk] = [2, 10], got [2, 8]");
  expect_error([&] { attention(q, k, v, AttentionOptions().segment_ids(torch::zeros({2, 10}))); },
               "segment_ids must be integers");
  expect_error([&] { concord::ops::attention_decode(q, k, v); }, "one new token");
  auto fwd = concord::ops::attention_forward(q, k, v);
  expect_error([&] { concord::ops::attention_backward(q[0], q, k, v, fwd.out, fwd.lse); },
               "dout must have q's shape [2, 4, 8, 16]");
  expect_error([&] { concord::ops::attention_backward(q, q, k, v, fwd.out, fwd.lse[0]); },
               "lse must be [B, Hq, Tq] = [2, 4, 8]");
}

// ---- CUDA: each backend against the CPU result -------------------------------------------------

TEST(Attention, MatchesCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(11);
  const auto cuda = torch::Device(torch::kCUDA);
  // Otherwise this would compare the composite with itself (a build without CUDA dispatch).
  ASSERT_TRUE(concord::ops::attention_is_fused(torch::zeros({1, 1, 1, 8}, torch::device(cuda))));
  for (auto dtype : {torch::kFloat, torch::kHalf, torch::kBFloat16}) {
    const double tol = dtype == torch::kFloat ? 2e-4 : (dtype == torch::kHalf ? 2e-2 : 5e-2);
    for (const AttentionShape& s : kAttentionSweep) {
      const Inputs in = make_inputs(s, torch::kFloat);
      const auto o = AttentionOptions().causal(s.causal);
      auto q = in.q.to(dtype), k = in.k.to(dtype), v = in.v.to(dtype), dout = in.dout.to(dtype);
      AttentionResult got = run(attention, q.to(cuda), k.to(cuda), v.to(cuda), dout.to(cuda), o);
      AttentionResult want = run(attention_reference, q.to(torch::kDouble), k.to(torch::kDouble),
                                 v.to(torch::kDouble), dout.to(torch::kDouble), o);
      const std::string what = describe(s) + " " + c10::toString(dtype);
      expect_close(got.out, want.out, tol, tol, what + " out");
      expect_close(got.dq, want.dq, tol, 4 * tol, what + " dq");
      expect_close(got.dk, want.dk, tol, 4 * tol, what + " dk");
      expect_close(got.dv, want.dv, tol, 4 * tol, what + " dv");
    }
  }
}

TEST(Attention, DecodeAndSegmentsMatchCpu_CUDA) {
  CONCORD_REQUIRE_CUDA();
  torch::manual_seed(12);
  const auto cuda = torch::Device(torch::kCUDA);
  auto q = torch::randn({2, 8, 1, 128}), k = torch::randn({2, 2, 2000, 128}),
       v = torch::randn({2, 2, 2000, 128});
  const auto o = AttentionOptions().causal(true);
  expect_close(concord::ops::attention_decode(q.to(cuda), k.to(cuda), v.to(cuda), o),
               attention_reference(q, k, v, o), 1e-4, 2e-5, "decode");
  auto seg = torch::tensor({1, 1, 2, 2, 2, 0}, torch::kLong).repeat_interleave(20).view({1, 120});
  auto qs = torch::randn({1, 4, 120, 64}), ks = torch::randn({1, 2, 120, 64}),
       vs = torch::randn({1, 2, 120, 64}), ds = torch::randn({1, 4, 120, 64});
  const auto os = AttentionOptions().causal(true).segment_ids(seg);
  AttentionResult got = run(attention, qs.to(cuda), ks.to(cuda), vs.to(cuda), ds.to(cuda), os);
  AttentionResult want = run(attention_reference, qs, ks, vs, ds, os);
  expect_close(got.out, want.out, 1e-4, 2e-5, "segments out");
  expect_close(got.dq, want.dq, 1e-4, 1e-4, "segments dq");
  expect_close(got.dk, want.dk, 1e-4, 1e-4, "segments dk");
}

}  // namespace
