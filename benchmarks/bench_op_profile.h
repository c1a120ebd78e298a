// Self time per ATen operator, by phase, on the thread that starts the profile: what the
// --profile flag of bench_unet and bench_sdxl_pipeline reports. Intra-op worker threads run
// inside the operator that spawned them, so an operator's wall time on this thread includes
// their work; its self time is that wall time less the wall time of the operators it called.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ATen/record_function.h>

namespace concord::bench {

class OpProfile {
 public:
  template <class V>
  using ByPhase = std::map<std::string, std::map<std::string, V>>;  // phase -> operator -> V

  OpProfile() = default;
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  ~OpProfile() { stop(); }

  /// Counts the calling thread's operators (RecordFunction's FUNCTION scope) until stop(). One
  /// profile at a time in a process.
  void start() {
    thread_ = std::this_thread::get_id();
    active() = this;
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&OpProfile::on_start, &OpProfile::on_end)
            .scopes({at::RecordScope::FUNCTION}));
  }
  void stop() {
    if (handle_) at::removeCallback(*handle_);
    handle_.reset();
    if (active() == this) active() = nullptr;
  }

  /// The phase the operators that follow count under ("" until set).
  void set_phase(std::string phase) { phase_ = std::move(phase); }

  const ByPhase<double>& self_ms() const { return self_ms_; }
  const ByPhase<int64_t>& calls() const { return calls_; }
  /// One phase's table (empty when nothing ran in it).
  const std::map<std::string, double>& self_ms(const std::string& phase) const {
    static const std::map<std::string, double> none;
    const auto it = self_ms_.find(phase);
    return it == self_ms_.end() ? none : it->second;
  }
  int64_t calls(const std::string& phase, const std::string& op) const {
    const auto it = calls_.find(phase);
    if (it == calls_.end()) return 0;
    const auto call = it->second.find(op);
    return call == it->second.end() ? 0 : call->second;
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Frame {
    Clock::time_point start;
    double children_ms = 0;
  };
  struct Context : at::ObserverContext {
    bool counted = false;
  };

  static OpProfile*& active() {
    static OpProfile* profile = nullptr;
    return profile;
  }

  static std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) {
    auto ctx = std::make_unique<Context>();
    OpProfile* p = active();
    if (p && std::this_thread::get_id() == p->thread_) {
      ctx->counted = true;
      p->stack_.push_back({Clock::now(), 0.0});
    }
    return ctx;
  }

  static void on_end(const at::RecordFunction& fn, at::ObserverContext* base) {
    auto* ctx = static_cast<Context*>(base);
    OpProfile* p = active();
    if (!p || !ctx || !ctx->counted || p->stack_.empty()) return;
    const Frame frame = p->stack_.back();
    p->stack_.pop_back();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - frame.start).count();
    p->self_ms_[p->phase_][fn.name()] += ms - frame.children_ms;
    p->calls_[p->phase_][fn.name()] += 1;
    if (!p->stack_.empty()) p->stack_.back().children_ms += ms;
  }

  std::thread::id thread_;
  std::string phase_;
  std::vector<Frame> stack_;
  ByPhase<double> self_ms_;
  ByPhase<int64_t> calls_;
  std::optional<at::CallbackHandle> handle_;
};

}  // namespace concord::bench
