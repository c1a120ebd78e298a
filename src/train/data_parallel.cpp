#include "concord/train/data_parallel.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>

#include "concord/core/error.h"

namespace concord::train {

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

void DataParallel::all_reduce_gradients() {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> buffers;
  buffers.reserve(buckets_.size());
  for (const auto& bucket : buckets_) {
    std::vector<at::Tensor> grads;
    for (size_t k : bucket) {
      at::Tensor& p = params_[k].second;
      if (!p.grad().defined()) p.mutable_grad() = at::zeros_like(p);
      grads.push_back(p.grad());
    }
    buffers.push_back(flatten(grads));
  }
  group_->all_reduce_sum(buffers);  // every bucket in flight before the first wait
  for (size_t b = 0; b < buckets_.size(); ++b) {
    std::vector<at::Tensor> grads;
    for (size_t k : buckets_[b]) grads.push_back(params_[k].second.grad());
    unflatten_into(buffers[b], grads);
  }
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
