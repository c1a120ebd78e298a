// FeatureCapture: reading a model's intermediate features by module path, the way PyTorch code
// reads them with forward hooks (which LibTorch's C++ modules do not have). Two of Concord's
// papers need it:
//   - PanGu-π's feature-collapse analysis (arXiv 2312.17276, Section 3) measures d_M(H_l) on the
//     output H_l of every block l and on the embeddings the first block reads
//     (concord/lm/diversity.h);
//   - KOALA's self-attention distillation (arXiv 2312.04005) matches the outputs of
//     a student U-Net's self-attention modules to a frozen teacher's: the teacher's features are
//     read without gradients, the student's keep their autograd graph and take part in the loss.
//
//   {
//     nn::FeatureCapture features(model, {"embed_out", "layers.0", "layers.1.attn"});
//     model->forward(ids);
//     at::Tensor h0 = features.get("layers.0");   // [B, T, d], with its autograd graph
//   }                                             // capturing stops here
//
// Paths are those of root.named_modules() ("" is the root itself), resolved once, at
// construction, to module objects: an unknown path throws, naming it and the closest valid ones.
// A module reports its output by ending its forward with record_output(*this, output); every
// Concord module does (src/nn, the CausalLM and its blocks). LibTorch's own modules
// (torch::nn::Linear, LayerNorm, Embedding, Identity, ...) cannot; a Concord module that calls
// one reports for it, record_output(*child, child->forward(x)), and every such call site in
// Concord does, so every path of a Concord model records (tested on each model family). A
// module that never reports (a LibTorch module called directly, a user module without the
// call) is found when its output is read: get() then throws and says why.
//
// Cost when no capture is active: record_output reads one thread-local pointer and returns; no
// locking, no strings, no allocation. While captures are active, each report compares the
// module's address with the resolved targets of every active capture of the thread.
//
// Scoping and threads: a capture records from construction to destruction, only on the thread
// that created it (forwards run on other threads are not seen; destroy it on that thread).
// Captures nest: every active capture whose targets include a module records it, so a teacher's
// and a student's captures (two roots, distinct module objects) or two captures of one model can
// be active at once. Captured tensors are the modules' outputs themselves (no copy): they keep
// their autograd graph unless the options say detach, which a frozen teacher's capture does.
#pragma once
#include <ATen/ATen.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace concord::nn {

class FeatureCapture;

namespace detail {
/// The innermost active FeatureCapture of this thread (nullptr: none is active).
extern thread_local FeatureCapture* innermost_capture;
/// Records `output` into every active capture of this thread that targets `module`.
void record_active(const torch::nn::Module& module, const at::Tensor& output);
}  // namespace detail

/// Reports `output` as the output of `module` to this thread's active captures and returns it.
/// A module's forward ends with `return record_output(*this, y);`; a module that calls a
/// LibTorch child reports for it with `record_output(*child, child->forward(x))`.
inline at::Tensor record_output(const torch::nn::Module& module, at::Tensor output) {
  if (detail::innermost_capture != nullptr) detail::record_active(module, output);
  return output;
}

struct FeatureCaptureOptions {
  /* implicit */ FeatureCaptureOptions(std::vector<std::string> paths)  // NOLINT
      : paths_(std::move(paths)) {}
  /// Module paths as root.named_modules() names them ("layers.3", "layers.3.attn"; "": the
  /// root). Each must exist and be listed once.
  TORCH_ARG(std::vector<std::string>, paths);
  /// Store detached outputs (the autograd graph is not kept): a frozen teacher's features, or
  /// features read for analysis while gradients are on.
  TORCH_ARG(bool, detach) = false;
  /// Keep every output a path records, in call order (a module run several times in the
  /// scope: a loop over batches, decoding steps). Off: a new output replaces the previous one,
  /// so a scope can span many forward passes and hold one pass's features.
  TORCH_ARG(bool, keep_all) = false;
};

class FeatureCapture {
 public:
  /// Starts capturing `options.paths()` of `root` on this thread; throws concord::Error naming
  /// an unknown path (and the closest valid ones), a path listed twice, or a container
  /// (ModuleList, ModuleDict, Sequential) that has no output of its own.
  FeatureCapture(const torch::nn::Module& root, FeatureCaptureOptions options);
  FeatureCapture(const torch::nn::Module& root, std::vector<std::string> paths)
      : FeatureCapture(root, FeatureCaptureOptions(std::move(paths))) {}
  template <typename M>
  FeatureCapture(const torch::nn::ModuleHolder<M>& root, FeatureCaptureOptions options)
      : FeatureCapture(*root, std::move(options)) {}
  template <typename M>
  FeatureCapture(const torch::nn::ModuleHolder<M>& root, std::vector<std::string> paths)
      : FeatureCapture(*root, FeatureCaptureOptions(std::move(paths))) {}
  ~FeatureCapture();
  FeatureCapture(const FeatureCapture&) = delete;
  FeatureCapture& operator=(const FeatureCapture&) = delete;
  FeatureCapture(FeatureCapture&&) = delete;  // the thread's list of active captures points here
  FeatureCapture& operator=(FeatureCapture&&) = delete;

  /// The latest output recorded at `path`. Throws concord::Error when `path` is not captured
  /// here, or when it recorded nothing (the module did not run in this scope, or it does not
  /// report: see the header comment).
  at::Tensor get(const std::string& path) const;
  /// Every output recorded at `path` since construction or clear(), in call order (at most one
  /// without keep_all); empty when none. Throws when `path` is not captured here.
  std::vector<at::Tensor> all(const std::string& path) const;
  /// Outputs recorded at `path` and held (all(path).size()).
  size_t count(const std::string& path) const;
  /// Drops every recorded output (and the autograd graphs they hold); capturing goes on.
  void clear();

  const std::vector<std::string>& paths() const { return options_.paths(); }
  const FeatureCaptureOptions& options() const { return options_; }

 private:
  friend void detail::record_active(const torch::nn::Module&, const at::Tensor&);
  void record(size_t slot, const at::Tensor& output);
  size_t slot_of(const std::string& path) const;

  FeatureCaptureOptions options_;
  std::string root_name_;
  /// Resolved targets: module address and the slot (index into paths) it records into. The
  /// shared_ptrs keep the captured modules alive as long as the capture (the root is the
  /// caller's).
  std::vector<std::pair<const torch::nn::Module*, size_t>> targets_;
  std::vector<std::shared_ptr<torch::nn::Module>> keep_alive_;
  std::vector<std::string> type_names_;           ///< per slot, for get()'s error
  std::vector<std::vector<at::Tensor>> outputs_;  ///< per slot
  FeatureCapture* outer_ = nullptr;               ///< the capture active before this one
};

}  // namespace concord::nn
