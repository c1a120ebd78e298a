// Checks the ops tests share: a fused kernel's result against its reference, its input checks.
#pragma once
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <functional>
#include <string>

#include "concord/core/error.h"

namespace concord::testing {

/// Expects got to be finite, shaped like want and max(|got - want| - rtol |want|) <= atol.
inline void expect_close(const torch::Tensor& got, const torch::Tensor& want, double rtol,
                         double atol, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (want.numel() == 0) return;
  const auto g = got.to(torch::kDouble).cpu(), w = want.to(torch::kDouble).cpu();
  ASSERT_TRUE(torch::isfinite(g).all().item<bool>()) << what << ": non-finite values";
  const double err = ((g - w).abs() - rtol * w.abs()).max().item<double>();
  EXPECT_LE(err, atol) << what << ": max |got - want| = " << (g - w).abs().max().item<double>();
}

/// Expects f to throw concord::Error whose message contains `fragment`.
inline void expect_error(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "expected concord::Error mentioning '" << fragment << "'";
  } catch (const concord::Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

/// max |a - b| / max |b|, in double.
inline double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor x = a.to(at::kDouble), y = b.to(at::kDouble);
  return ((x - y).abs().max() / (y.abs().max() + 1e-12)).item<double>();
}

}  // namespace concord::testing
