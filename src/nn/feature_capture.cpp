#include "concord/nn/feature_capture.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/container/sequential.h>

#include "concord/core/error.h"

namespace concord::nn {

namespace detail {

thread_local FeatureCapture* innermost_capture = nullptr;

void record_active(const torch::nn::Module& module, const at::Tensor& output) {
  for (FeatureCapture* c = innermost_capture; c != nullptr; c = c->outer_) {
    for (const auto& [target, slot] : c->targets_) {
      if (target == &module) c->record(slot, output);
    }
  }
}

}  // namespace detail

namespace {

// Levenshtein distance: only computed on the error path, to suggest the paths a typo was
// meant to be.
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  std::iota(row.begin(), row.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::ostringstream out;
  for (size_t i = 0; i < names.size(); ++i) out << (i ? ", " : "") << "'" << names[i] << "'";
  return out.str();
}

// The `limit` valid paths closest to `path` (ties in named_modules() order).
std::vector<std::string> closest(const std::string& path, const std::vector<std::string>& valid,
                                 size_t limit) {
  std::vector<std::pair<size_t, size_t>> ranked;  // (distance, index)
  for (size_t i = 0; i < valid.size(); ++i) ranked.emplace_back(edit_distance(path, valid[i]), i);
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < ranked.size() && i < limit; ++i) out.push_back(valid[ranked[i].second]);
  return out;
}

bool is_container(const torch::nn::Module& m) {
  return dynamic_cast<const torch::nn::ModuleListImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::ModuleDictImpl*>(&m) != nullptr ||
         dynamic_cast<const torch::nn::SequentialImpl*>(&m) != nullptr;
}

}  // namespace

FeatureCapture::FeatureCapture(const torch::nn::Module& root, FeatureCaptureOptions options)
    : options_(std::move(options)), root_name_(root.name()) {
  // named_modules without the root: with it, LibTorch calls shared_from_this() on the root,
  // which a module not owned by a shared_ptr does not support. The root is path "".
  const auto modules = root.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  const std::vector<std::string>& paths = options_.paths();
  for (size_t slot = 0; slot < paths.size(); ++slot) {
    const std::string& path = paths[slot];
    CONCORD_CHECK(std::find(paths.begin(), paths.begin() + static_cast<std::ptrdiff_t>(slot),
                            path) == paths.begin() + static_cast<std::ptrdiff_t>(slot),
                  "FeatureCapture: path '", path, "' is listed twice");
    const torch::nn::Module* module = &root;
    if (!path.empty()) {
      const std::shared_ptr<torch::nn::Module>* found = modules.find(path);
      if (found == nullptr) {
        std::vector<std::string> valid = modules.keys();
        valid.insert(valid.begin(), std::string());
        fail("FeatureCapture: no module '", path, "' in ", root_name_, "; closest: ",
             quoted_list(closest(path, valid, 5)), " (", valid.size(),
             " paths, as named_modules() names them; '' is the root)");
      }
      keep_alive_.push_back(*found);
      module = found->get();
    }
    if (is_container(*module)) {
      std::string element;
      for (const auto& key : modules.keys()) {
        if (key.rfind(path + ".", 0) == 0) {
          element = key;
          break;
        }
      }
      fail("FeatureCapture: '", path, "' is a ", module->name(),
           ", a container with no output of its own; capture its elements",
           element.empty() ? std::string() : " ('" + element + "', ...)");
    }
    targets_.emplace_back(module, slot);
    type_names_.push_back(module->name());
  }
  outputs_.resize(paths.size());
  outer_ = detail::innermost_capture;
  detail::innermost_capture = this;
}

FeatureCapture::~FeatureCapture() {
  // Usually the innermost capture; a capture owned by something else (a unique_ptr, an
  // optional) may end out of order, so unlink it wherever it sits in the list.
  FeatureCapture** link = &detail::innermost_capture;
  while (*link != nullptr && *link != this) link = &(*link)->outer_;
  if (*link == this) *link = outer_;
}

void FeatureCapture::record(size_t slot, const at::Tensor& output) {
  std::vector<at::Tensor>& held = outputs_[slot];
  at::Tensor value = options_.detach() ? output.detach() : output;
  if (options_.keep_all() || held.empty()) {
    held.push_back(std::move(value));
  } else {
    held.front() = std::move(value);
  }
}

size_t FeatureCapture::slot_of(const std::string& path) const {
  const std::vector<std::string>& paths = options_.paths();
  const auto it = std::find(paths.begin(), paths.end(), path);
  CONCORD_CHECK(it != paths.end(), "FeatureCapture: '", path, "' is not captured here (captured: ",
                quoted_list(paths), ")");
  return static_cast<size_t>(it - paths.begin());
}

at::Tensor FeatureCapture::get(const std::string& path) const {
  const size_t slot = slot_of(path);
  CONCORD_CHECK(!outputs_[slot].empty(), "FeatureCapture: '", path, "' (", type_names_[slot],
                ") recorded no output: it did not run while the capture was active, or it does "
                "not report its output (LibTorch's own modules report only where a Concord "
                "module calls them through nn::record_output; see concord/nn/feature_capture.h)");
  return outputs_[slot].back();
}

std::vector<at::Tensor> FeatureCapture::all(const std::string& path) const {
  return outputs_[slot_of(path)];
}

size_t FeatureCapture::count(const std::string& path) const {
  return outputs_[slot_of(path)].size();
}

void FeatureCapture::clear() {
  for (auto& held : outputs_) held.clear();
}

}  // namespace concord::nn
