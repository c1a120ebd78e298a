// AugmentedShortcut: the augmented shortcuts of PanGu-π (Wang et al., arXiv 2312.17276, Eq. 4,
// after Tang et al., "Augmented Shortcuts for Vision Transformers", NeurIPS 2021):
//
//   AugMSA(Z) = MSA(Z) + Z + sum_{i=1..T} T_i(Z),   T_i(Z) = FC_i2(GELU(FC_i1(Z)))
//
// with each T_i a bottleneck FC(d -> d/r) -> GELU -> FC(d/r -> d) (the paper's r = 32). This
// module computes only sum_i T_i(Z); the transformer block adds it to the attention output and
// the residual, on the block's normed input. The second FC of every path is zero-initialised, so
// a fresh shortcut adds nothing and a block starts as the plain pre-norm block; its gradient
// (GELU(FC_i1(Z)) times the incoming gradient) is non-zero, so the paths start learning at once.
// The T paths run as concord::ops::augmented_shortcut: one grouped pair of GEMMs over the stacked
// weights ([T, ...]) with bias + GELU fused between them (CPU, and CUDA in a build with CUDA
// dispatch), the composite elsewhere (see concord/ops/augmented_shortcut.h).
#pragma once
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <ostream>

namespace concord::nn {

struct AugmentedShortcutOptions {
  /* implicit */ AugmentedShortcutOptions(int64_t dim) : dim_(dim) {}  // NOLINT
  /// d: model width.
  TORCH_ARG(int64_t, dim);
  /// T: number of parallel shortcut paths.
  TORCH_ARG(int64_t, paths) = 1;
  /// r: bottleneck reduction, each path is d -> d/r -> d (d/r rounded up, at least 1).
  TORCH_ARG(int64_t, reduction) = 32;
  /// Biases on both FCs.
  TORCH_ARG(bool, bias) = true;
};

class AugmentedShortcutImpl : public torch::nn::Cloneable<AugmentedShortcutImpl> {
 public:
  explicit AugmentedShortcutImpl(AugmentedShortcutOptions options);
  void reset() override;
  /// FC1 weights ~ U(-1/sqrt(d), 1/sqrt(d)) (nn.Linear's default), FC1 bias 0, FC2 all zero.
  void reset_parameters();
  /// z: [..., d] -> sum_i T_i(z), [..., d].
  at::Tensor forward(const at::Tensor& z);
  /// d/r rounded up.
  int64_t bottleneck() const;
  void pretty_print(std::ostream& stream) const override;

  AugmentedShortcutOptions options;
  at::Tensor fc1_weight;  ///< [T, d/r, d]
  at::Tensor fc1_bias;    ///< [T, d/r] (undefined without bias)
  at::Tensor fc2_weight;  ///< [T, d, d/r]
  at::Tensor fc2_bias;    ///< [T, d]   (undefined without bias)
};
TORCH_MODULE(AugmentedShortcut);

}  // namespace concord::nn
