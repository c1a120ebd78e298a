#include "concord/train/process_group.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <utility>

#include "concord/core/shard.h"

#if CONCORD_HAS_GLOO
// The backend is compiled into LibTorch; its header is guarded by the macro LibTorch's own
// build defines.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif
#if CONCORD_HAS_NCCL
// Likewise guarded; a CUDA LibTorch (2.x) compiles it in.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <c10/cuda/CUDAFunctions.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/cuda.h>
#endif

namespace concord::train {

namespace {

std::string env_string(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

double env_number(const char* name, double fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v, &end);
  if (end == v || *end != '\0' || errno == ERANGE) {
    fail_config(std::string(name) + "=" + v, "expected a number");
  }
  return x;
}

}  // namespace

ProcessGroupOptions ProcessGroupOptions::from_environment() {
  const Shard shard = process_shard();
  ProcessGroupOptions o;
  o.rank = shard.rank;
  o.world_size = shard.world_size;
  o.local_rank = static_cast<int64_t>(env_number("LOCAL_RANK", 0));
  o.master_addr = env_string("MASTER_ADDR", o.master_addr);
  const double port = env_number("MASTER_PORT", static_cast<double>(o.master_port));
  if (!(port >= 1 && port <= 65535) || port != static_cast<int64_t>(port)) {
    fail_config("MASTER_PORT=" + env_string("MASTER_PORT", ""), "expected a port in [1, 65535]");
  }
  o.master_port = static_cast<int64_t>(port);
  o.timeout_s = env_number("CONCORD_DIST_TIMEOUT", o.timeout_s);
  if (!(o.timeout_s > 0)) {
    fail_config("CONCORD_DIST_TIMEOUT=" + env_string("CONCORD_DIST_TIMEOUT", ""),
                "expected a positive number of seconds");
  }
  return o;
}

#if CONCORD_HAS_GLOO

bool distributed_available() { return true; }

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#if CONCORD_HAS_NCCL
  /// Null when this process has no CUDA device of its own (cuda:LOCAL_RANK).
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;

  ~Impl() {
    // abort, not shutdown: it never waits on a peer (one may be gone), and every collective
    // this class starts is waited for before its call returns. At exit the CUDA runtime may
    // already be unloading; nothing is left to report then.
    if (nccl) {
      try {
        nccl->abort();
      } catch (...) {
      }
    }
  }

  // Beside Gloo, on the same store (under a prefix of its own, so the keys of the two never
  // meet), when this process has a CUDA device of its own. The communicator is made on the
  // first CUDA collective, so a job that keeps its tensors on the host never sets one up.
  void make_nccl(const ProcessGroupOptions& o, std::chrono::milliseconds timeout) {
    if (!torch::cuda::is_available()) return;
    const int64_t devices = static_cast<int64_t>(torch::cuda::device_count());
    if (o.local_rank < 0 || o.local_rank >= devices) {
      spdlog::warn("distributed: LOCAL_RANK {} has no CUDA device of its own ({} on this node); "
                   "CUDA tensors go through Gloo",
                   o.local_rank, devices);
      return;
    }
    const c10::Device device(c10::kCUDA, static_cast<c10::DeviceIndex>(o.local_rank));
    c10::cuda::set_device(device.index());
    // Blocking wait makes Work::wait() throw when a peer dies or the timeout passes, as Gloo's
    // does, so the failure reaches collective() as one line; without it NCCL's watchdog thread
    // ends the process instead. A value the user set is kept.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
    nccl_options->timeout = timeout;
    nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
        c10::make_intrusive<c10d::PrefixStore>("nccl", store), static_cast<int>(o.rank),
        static_cast<int>(o.world_size), nccl_options);
    nccl->setBoundDeviceId(device);
  }
#endif

  /// Calls `f` with the backend that runs collectives on `t`: NCCL for a CUDA tensor when this
  /// process has it, Gloo otherwise (host tensors, and builds without NCCL).
  template <typename F>
  c10::intrusive_ptr<c10d::Work> on_backend(const at::Tensor& t, F&& f) {
#if CONCORD_HAS_NCCL
    if (nccl && t.is_cuda()) return f(*nccl);
#endif
    return f(*gloo);
  }

  /// Refuses, before anything is sent, a CUDA tensor NCCL cannot take: NCCL runs each process
  /// on its own device, cuda:LOCAL_RANK.
  void check_device(const std::vector<at::Tensor>& tensors, const ProcessGroupOptions& o,
                    const char* what) const {
#if CONCORD_HAS_NCCL
    if (!nccl) return;
    for (const auto& t : tensors) {
      CONCORD_CHECK(!t.is_cuda() || t.device().index() == o.local_rank, "distributed ", what,
                    " on rank ", o.rank, ": CUDA tensors must be on this process's device cuda:",
                    o.local_rank, " (LOCAL_RANK), got ", t.device().str());
    }
#endif
  }
};

namespace {

// Runs a c10d call; its errors (a closed connection, a timeout) become one DistributedError
// line naming the operation and this rank.
template <typename F>
auto collective(const ProcessGroupOptions& o, const std::string& what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    std::string detail = e.what();
    const auto newline = detail.find('\n');
    if (newline != std::string::npos) detail.resize(newline);
    throw DistributedError("distributed: " + what + " failed on rank " +
                           std::to_string(o.rank) + " of " + std::to_string(o.world_size) +
                           " (a peer process exited or stopped answering within " +
                           std::to_string(static_cast<int64_t>(o.timeout_s)) + " s): " + detail);
  }
}

void wait_all(const ProcessGroupOptions& o, const char* what,
              std::vector<c10::intrusive_ptr<c10d::Work>>& works) {
  collective(o, what, [&] {
    for (auto& w : works) w->wait();
    return 0;
  });
}

void check_dense(const std::vector<at::Tensor>& tensors, const char* what) {
  for (const auto& t : tensors) {
    CONCORD_CHECK(t.defined() && t.is_contiguous() && t.layout() == at::kStrided, "distributed ",
                  what, ": tensors must be defined, dense and contiguous");
  }
}

}  // namespace

ProcessGroup::ProcessGroup(const ProcessGroupOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()) {
  CONCORD_CHECK(options_.world_size >= 1 && options_.rank >= 0 &&
                    options_.rank < options_.world_size,
                "ProcessGroup: rank ", options_.rank, " out of range for world size ",
                options_.world_size);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options_.timeout_s * 1000));
  collective(options_,
             "rendezvous at " + options_.master_addr + ":" + std::to_string(options_.master_port),
             [&] {
               c10d::TCPStoreOptions so;
               so.port = static_cast<std::uint16_t>(options_.master_port);
               so.isServer = options_.rank == 0;
               so.numWorkers = static_cast<std::size_t>(options_.world_size);
               so.waitWorkers = true;
               so.timeout = timeout;
               impl_->store = c10::make_intrusive<c10d::TCPStore>(options_.master_addr, so);
               auto gloo_options = c10d::ProcessGroupGloo::Options::create(timeout);
               // Gloo binds this host's address; loopback when the job is local.
               const bool local = options_.master_addr == "127.0.0.1" ||
                                  options_.master_addr == "localhost";
               gloo_options->devices.push_back(
                   local ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                         : c10d::ProcessGroupGloo::createDefaultDevice());
               gloo_options->threads = 2;
               impl_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
                   impl_->store, static_cast<int>(options_.rank),
                   static_cast<int>(options_.world_size), gloo_options);
#if CONCORD_HAS_NCCL
               impl_->make_nccl(options_, timeout);
#endif
               return 0;
             });
}

ProcessGroup::~ProcessGroup() = default;

void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
  check_dense(tensors, "all-reduce");
  impl_->check_device(tensors, options_, "all-reduce");
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  const double w = static_cast<double>(options_.world_size);
  collective(options_, "all-reduce", [&] {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      c10d::AllreduceOptions ao;
      ao.reduceOp = c10d::ReduceOp::SUM;
      works.push_back(impl_->on_backend(t, [&](auto& pg) { return pg.allreduce(one, ao); }));
      bytes_ += 2.0 * (w - 1) / w * static_cast<double>(t.nbytes());
    }
    return 0;
  });
  wait_all(options_, "all-reduce", works);
}

struct PendingCollective::Work {
  c10::intrusive_ptr<c10d::Work> work;
  ProcessGroupOptions options;
};

void PendingCollective::wait() {
  if (work_ == nullptr) return;
  collective(work_->options, "all-reduce", [&] { return work_->work->wait(); });
  work_.reset();
}

PendingCollective ProcessGroup::all_reduce_sum_async(at::Tensor& tensor) {
  check_dense({tensor}, "all-reduce");
  impl_->check_device({tensor}, options_, "all-reduce");
  PendingCollective pending;
  pending.work_ = std::make_unique<PendingCollective::Work>();
  pending.work_->options = options_;
  collective(options_, "all-reduce", [&] {
    std::vector<at::Tensor> one{tensor};
    c10d::AllreduceOptions ao;
    ao.reduceOp = c10d::ReduceOp::SUM;
    pending.work_->work =
        impl_->on_backend(tensor, [&](auto& pg) { return pg.allreduce(one, ao); });
    return 0;
  });
  const double w = static_cast<double>(options_.world_size);
  bytes_ += 2.0 * (w - 1) / w * static_cast<double>(tensor.nbytes());
  return pending;
}

void ProcessGroup::broadcast(std::vector<at::Tensor>& tensors, int64_t root) {
  if (tensors.empty()) return;
  check_dense(tensors, "broadcast");
  impl_->check_device(tensors, options_, "broadcast");
  CONCORD_CHECK(root >= 0 && root < options_.world_size, "broadcast: root ", root,
                " out of range for world size ", options_.world_size);
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  collective(options_, "broadcast", [&] {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions bo;
      bo.rootRank = root;
      works.push_back(impl_->on_backend(t, [&](auto& pg) { return pg.broadcast(one, bo); }));
      if (options_.rank == root) bytes_ += static_cast<double>(t.nbytes());
    }
    return 0;
  });
  wait_all(options_, "broadcast", works);
}

std::string ProcessGroup::broadcast_string(const std::string& value, int64_t root) {
  // The length first, then the bytes.
  std::vector<at::Tensor> length{at::tensor({static_cast<int64_t>(value.size())}, at::kLong)};
  broadcast(length, root);
  const int64_t n = length[0].item<int64_t>();
  std::vector<at::Tensor> bytes{at::empty({std::max<int64_t>(n, 1)}, at::kByte)};
  if (options_.rank == root && n > 0) std::memcpy(bytes[0].data_ptr(), value.data(), value.size());
  broadcast(bytes, root);
  return std::string(static_cast<const char*>(bytes[0].data_ptr()), static_cast<size_t>(n));
}

std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values) {
  if (values.empty()) return {};
  std::vector<at::Tensor> t{at::tensor(values, at::kDouble)};
  all_reduce_sum(t);
  const double* p = t[0].data_ptr<double>();
  return std::vector<double>(p, p + values.size());
}

void ProcessGroup::barrier() {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  collective(options_, "barrier", [&] {
    works.push_back(impl_->gloo->barrier());
    return 0;
  });
  wait_all(options_, "barrier", works);
}

#else  // !CONCORD_HAS_GLOO

bool distributed_available() { return false; }

struct ProcessGroup::Impl {};

ProcessGroup::ProcessGroup(const ProcessGroupOptions& options) : options_(options) {
  fail_unsupported("data parallel (WORLD_SIZE=", options.world_size,
                   ") needs c10d's Gloo backend, which this build was made without (install "
                   "libgloo-dev and rebuild)");
}
ProcessGroup::~ProcessGroup() = default;
void ProcessGroup::all_reduce_sum(std::vector<at::Tensor>&) {}
struct PendingCollective::Work {};
void PendingCollective::wait() {}
PendingCollective ProcessGroup::all_reduce_sum_async(at::Tensor&) { return {}; }
void ProcessGroup::broadcast(std::vector<at::Tensor>&, int64_t) {}
std::string ProcessGroup::broadcast_string(const std::string& value, int64_t) { return value; }
std::vector<double> ProcessGroup::all_reduce_sum(const std::vector<double>& values) {
  return values;
}
void ProcessGroup::barrier() {}

#endif

PendingCollective::PendingCollective() = default;
PendingCollective::~PendingCollective() = default;
PendingCollective::PendingCollective(PendingCollective&&) noexcept = default;
PendingCollective& PendingCollective::operator=(PendingCollective&&) noexcept = default;

std::shared_ptr<ProcessGroup> default_process_group() {
  static std::mutex mutex;
  static std::shared_ptr<ProcessGroup> group;
  static bool made = false;
  std::lock_guard<std::mutex> lock(mutex);
  if (!made) {
    const ProcessGroupOptions o = ProcessGroupOptions::from_environment();
    if (o.world_size > 1) group = std::make_shared<ProcessGroup>(o);
    made = true;
  }
  return group;
}

}  // namespace concord::train
