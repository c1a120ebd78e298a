#include "concord/train/data_parallel.h"

#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>

#include "concord/core/error.h"

namespace concord::train {

// The AccumulateGrad nodes the hooks sit on, with each hook's key.
struct DataParallel::Hooks {
  using Node = decltype(torch::autograd::impl::grad_accumulator(std::declval<at::Tensor>()));
  std::vector<std::pair<Node, uintptr_t>> nodes;
};

namespace {

// Flattens `tensors` into one buffer (what one collective sends).
at::Tensor flatten(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> flat;
  flat.reserve(tensors.size());
  for (const auto& t : tensors) flat.push_back(t.reshape({-1}));
  return at::cat(flat);
}

// Copies the slices of `buffer` back into `tensors`.
void unflatten_into(const at::Tensor& buffer, const std::vector<at::Tensor>& tensors) {
  int64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(buffer.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

}  // namespace

DataParallel::DataParallel(std::shared_ptr<ProcessGroup> group,
                           std::vector<std::pair<std::string, at::Tensor>> params,
                           DataParallelOptions options)
    : group_(std::move(group)), params_(std::move(params)), options_(options) {
  CONCORD_CHECK(group_ != nullptr, "DataParallel: no process group");
  CONCORD_CHECK(options_.bucket_mb > 0, "DataParallel: bucket_mb must be positive, got ",
                options_.bucket_mb);
  // Owners: each parameter goes to the rank with the fewest elements so far (ties: lowest
  // rank), in parameter order; deterministic, so every rank agrees without talking.
  owners_.assign(params_.size(), 0);
  if (options_.shard_optimizer) {
    std::vector<int64_t> load(static_cast<size_t>(world_size()), 0);
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto it = std::min_element(load.begin(), load.end());
      owners_[i] = it - load.begin();
      *it += params_[i].second.numel();
    }
  }
  // Buckets in reverse parameter order, split by dtype/device and size.
  const int64_t limit = static_cast<int64_t>(options_.bucket_mb * 1024 * 1024);
  std::vector<size_t> current;
  int64_t current_bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const at::Tensor& p = params_[k].second;
    const int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
    const bool compatible =
        current.empty() || (params_[current.front()].second.scalar_type() == p.scalar_type() &&
                            params_[current.front()].second.device() == p.device());
    if (!current.empty() && (!compatible || current_bytes + bytes > limit)) {
      buckets_.push_back(std::move(current));
      current.clear();
      current_bytes = 0;
    }
    current.push_back(k);
    current_bytes += bytes;
  }
  if (!current.empty()) buckets_.push_back(std::move(current));

  // Persistent buckets: one flat buffer each, a view per parameter.
  bucket_of_.assign(params_.size(), 0);
  offset_of_.assign(params_.size(), 0);
  for (size_t b = 0; b < buckets_.size(); ++b) {
    int64_t size = 0;
    for (size_t k : buckets_[b]) {
      bucket_of_[k] = b;
      offset_of_[k] = size;
      size += params_[k].second.numel();
    }
    buffers_.push_back(at::zeros({size}, params_[buckets_[b].front()].second.options()));
  }

  // A hook after each parameter's gradient accumulation (its AccumulateGrad node, which the
  // hooks keep alive); removed in the destructor, since the parameters outlive this object.
  hooks_ = std::make_unique<Hooks>();
  for (size_t k = 0; k < params_.size(); ++k) {
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[k].second);
    CONCORD_CHECK(static_cast<bool>(accumulator), "DataParallel: parameter '", params_[k].first,
                  "' does not require a gradient");
    const uintptr_t key = accumulator->add_post_hook(
        std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, k](const torch::autograd::variable_list& outputs,
                      const torch::autograd::variable_list&) {
              on_gradient_ready(k);
              return outputs;
            }));
    hooks_->nodes.push_back({std::move(accumulator), key});
  }
}

DataParallel::~DataParallel() {
  for (auto& [node, key] : hooks_->nodes) node->del_post_hook(key);
}

void DataParallel::broadcast_modules(const std::vector<NamedModule>& modules) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> tensors;
  for (const auto& [name, module] : modules) {
    for (const auto& p : module->parameters()) tensors.push_back(p);
    for (const auto& b : module->buffers()) tensors.push_back(b);
  }
  // One flattened broadcast per dtype/device, then copied back.
  std::vector<bool> done(tensors.size(), false);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (done[i]) continue;
    std::vector<at::Tensor> group;
    for (size_t j = i; j < tensors.size(); ++j) {
      if (!done[j] && tensors[j].scalar_type() == tensors[i].scalar_type() &&
          tensors[j].device() == tensors[i].device()) {
        group.push_back(tensors[j]);
        done[j] = true;
      }
    }
    std::vector<at::Tensor> buffer{flatten(group)};
    group_->broadcast(buffer, 0);
    unflatten_into(buffer[0], group);
  }
}

namespace {

// Parameter `k`'s view into its bucket.
at::Tensor view_in(const at::Tensor& buffer, const at::Tensor& param, int64_t offset) {
  return buffer.narrow(0, offset, param.numel()).view(param.sizes());
}

bool is_view_of(const at::Tensor& grad, const at::Tensor& view) {
  return grad.defined() && grad.data_ptr() == view.data_ptr() && grad.sizes() == view.sizes();
}

}  // namespace

void DataParallel::begin_step() {
  at::NoGradGuard no_grad;
  for (auto& buffer : buffers_) buffer.zero_();
  for (size_t k = 0; k < params_.size(); ++k) {
    at::Tensor& p = params_[k].second;
    p.mutable_grad() = view_in(buffers_[bucket_of_[k]], p, offset_of_[k]);
  }
  armed_ = false;
  in_flight_.clear();
  next_launch_ = 0;
  sent_early_ = 0;
}

void DataParallel::arm() {
  pending_.clear();
  for (const auto& bucket : buckets_) pending_.push_back(static_cast<int64_t>(bucket.size()));
  next_launch_ = 0;
  in_flight_.clear();
  sent_early_ = 0;
  armed_ = true;
}

void DataParallel::on_gradient_ready(size_t k) {
  if (!armed_) return;
  --pending_[bucket_of_[k]];
  // In order only: a later bucket ready first waits for the ones before it.
  while (next_launch_ < buckets_.size() && pending_[next_launch_] <= 0) {
    launch(next_launch_++);
    ++sent_early_;
  }
}

void DataParallel::launch(size_t b) {
  at::NoGradGuard no_grad;
  for (size_t k : buckets_[b]) {
    at::Tensor& p = params_[k].second;
    const at::Tensor view = view_in(buffers_[b], p, offset_of_[k]);
    if (is_view_of(p.grad(), view)) continue;
    if (p.grad().defined()) {
      view.copy_(p.grad());
    } else {
      view.zero_();
    }
    p.mutable_grad() = view;
  }
  in_flight_.push_back(group_->all_reduce_sum_async(buffers_[b]));
}

void DataParallel::all_reduce_gradients() {
  armed_ = false;
  while (next_launch_ < buckets_.size()) launch(next_launch_++);
  for (auto& work : in_flight_) work.wait();
  in_flight_.clear();
  next_launch_ = 0;
}

bool DataParallel::owns(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].first == name) return owners_[i] == rank();
  }
  return false;
}

void DataParallel::drop_foreign_gradients() {
  if (!options_.shard_optimizer) return;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (owners_[i] != rank()) params_[i].second.mutable_grad() = at::Tensor();
  }
}

void DataParallel::broadcast_updated_parameters() {
  if (!options_.shard_optimizer) return;
  at::NoGradGuard no_grad;
  for (int64_t r = 0; r < world_size(); ++r) {
    for (const auto& bucket : buckets_) {
      std::vector<at::Tensor> owned;
      for (size_t k : bucket) {
        if (owners_[k] == r) owned.push_back(params_[k].second);
      }
      if (owned.empty()) continue;
      std::vector<at::Tensor> buffer{flatten(owned)};
      group_->broadcast(buffer, r);
      if (r != rank()) unflatten_into(buffer[0], owned);
    }
  }
}

nlohmann::json DataParallel::layout() const {
  nlohmann::json owners = nlohmann::json::object();
  for (size_t i = 0; i < params_.size(); ++i) owners[params_[i].first] = owners_[i];
  return {{"world_size", world_size()},
          {"bucket_mb", options_.bucket_mb},
          {"shard_optimizer", options_.shard_optimizer},
          {"owners", options_.shard_optimizer ? owners : nlohmann::json::object()}};
}

}  // namespace concord::train
