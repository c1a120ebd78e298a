// Deferred parameter initialisation, for loaders that overwrite every parameter (the C++ side of
// what torch.nn.utils.skip_init and accelerate's init_empty_weights do in Python).
//
// Building CausalLM(config) for an 8B-parameter config draws 8e9 random numbers into 32 GB of
// fp32 parameters before a checkpoint loader replaces them all. While a SkipInitGuard is alive on
// the calling thread, nn::Linear and nn::Embedding (and the models' own re-initialisation of
// them) allocate their weights with at::empty and draw nothing: the allocator maps the memory
// without touching it, so no page becomes resident until something writes it, and a loader that
// swaps in the checkpoint's storage (Tensor::set_data) frees it untouched. The small parameters
// (norm scales, PanGu-π's SIAF and shortcut weights) initialise as usual.
#pragma once

namespace concord::nn {

/// True while a SkipInitGuard is alive on this thread.
bool skip_init_enabled();

/// Scoped: parameters of the large modules built on this thread stay uninitialised.
class SkipInitGuard {
 public:
  SkipInitGuard();
  ~SkipInitGuard();
  SkipInitGuard(const SkipInitGuard&) = delete;
  SkipInitGuard& operator=(const SkipInitGuard&) = delete;

 private:
  bool previous_;
};

}  // namespace concord::nn
