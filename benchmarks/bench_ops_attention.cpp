// Fused flash-style attention (concord::ops::attention) vs the naive matmul-softmax-matmul
// composite (concord::ops::attention_reference, what a PyTorch user writes), measured in the
// same run on the same tensors: time (median) and memory. On a GPU with LibTorch >= 2 the
// second baseline is at::scaled_dot_product_attention (PyTorch's flash / memory-efficient
// kernels), reported as sdpa_ms and sdpa_ratio = sdpa / fused (>= 1: Concord is faster).
//
//   bench_ops_attention [--seqs 512,1024,2048,4096] [--batch 1] [--heads 8] [--kv-heads 8]
//                       [--dim 64] [--causal 1] [--threads 2] [--iters 3] [--rss 1]
//                       [--passes fwd,fwd+bwd,decode] [--device cpu|cuda]
//                       [--dtype float|bfloat16|half]
//
// One JSON line per (T, pass) with both times and their ratio naive / fused (goal >= 1), and
// memory two ways on the CPU (for "fwd" and "fwd+bwd"; "decode" is one new token against a
// T-key cache):
//   naive_scores_bytes  the analytic size of one [B, H, T, T] fp32 score tensor, which the naive
//                       path materialises several times (scores, masked scores, probabilities,
//                       and their gradients backward);
//   *_peak_rss_delta    growth of the peak resident set (getrusage ru_maxrss) while running one
//                       pass, each path measured in its own child process (this binary run with
//                       --probe), so neither sees the other's high-water mark. --rss 0 skips it.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

#include "concord/ops/attention.h"

#include "bench_flags.h"
#include "bench_device.h"

namespace {

struct Config {
  std::vector<int64_t> seqs{512, 1024, 2048, 4096};
  int64_t batch = 1, heads = 8, kv_heads = 8, dim = 64;
  bool causal = true;
  int threads = 2, iters = 3;
  bool rss = true;
  std::string passes = "fwd,fwd+bwd,decode";
  std::string device = "cpu", dtype = "float";
  torch::Device dev{torch::kCPU};
  bool has(const std::string& pass) const {
    return ("," + passes + ",").find("," + pass + ",") != std::string::npos;
  }
};

namespace cb = concord::bench;

#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
constexpr bool kHaveSdpa = true;
at::Tensor sdpa(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal) {
  return at::scaled_dot_product_attention(q, k, v, {}, 0.0, causal);
}
#else
constexpr bool kHaveSdpa = false;
at::Tensor sdpa(const at::Tensor& q, const at::Tensor&, const at::Tensor&, bool) { return q; }
#endif

long peak_rss_kb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;  // KiB on Linux
}

struct Tensors {
  torch::Tensor q, k, v, dout;
};

Tensors make(const Config& c, int64_t T) {
  torch::manual_seed(0);
  const auto o = torch::dtype(cb::parse_dtype(c.dtype)).device(c.dev);
  return {torch::randn({c.batch, c.heads, T, c.dim}, o),
          torch::randn({c.batch, c.kv_heads, T, c.dim}, o),
          torch::randn({c.batch, c.kv_heads, T, c.dim}, o),
          torch::randn({c.batch, c.heads, T, c.dim}, o)};
}

enum class Path { Naive, Fused, Sdpa };

void run_pass(const Tensors& t, const concord::ops::AttentionOptions& o, Path path,
              bool backward) {
  auto op = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    if (path == Path::Sdpa) return sdpa(q, k, v, o.causal());
    return path == Path::Fused ? concord::ops::attention(q, k, v, o)
                               : concord::ops::attention_reference(q, k, v, o);
  };
  if (!backward) {
    torch::NoGradGuard g;
    op(t.q, t.k, t.v);
    return;
  }
  auto q = t.q.detach().requires_grad_(true), k = t.k.detach().requires_grad_(true),
       v = t.v.detach().requires_grad_(true);
  op(q, k, v).backward(t.dout);
}

// Child process: one pass of one path, prints the peak RSS growth in KiB.
int probe(const Config& c, int64_t T, bool fused, bool backward) {
  const Tensors t = make(c, T);
  const auto o = concord::ops::AttentionOptions().causal(c.causal);
  const long before = peak_rss_kb();
  run_pass(t, o, fused ? Path::Fused : Path::Naive, backward);
  std::printf("%ld\n", peak_rss_kb() - before);
  return 0;
}

long probe_in_child(const char* self, const Config& c, int64_t T, bool fused, bool backward) {
  std::ostringstream cmd;
  cmd << self << " --probe " << (fused ? "fused" : "naive") << " --probe-bwd "
      << (backward ? 1 : 0) << " --seqs " << T << " --batch " << c.batch << " --heads "
      << c.heads << " --kv-heads " << c.kv_heads << " --dim " << c.dim << " --causal "
      << (c.causal ? 1 : 0) << " --threads " << c.threads;
  FILE* pipe = popen(cmd.str().c_str(), "r");
  if (!pipe) return -1;
  long kb = -1;
  if (std::fscanf(pipe, "%ld", &kb) != 1) kb = -1;
  pclose(pipe);
  return kb;
}

// "128,512,4096" into positive lengths; false for anything else.
bool parse_list(const std::string& s, std::vector<int64_t>* out) {
  std::vector<int64_t> list;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    char* end = nullptr;
    const long long x = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || x < 1) return false;
    list.push_back(x);
  }
  if (list.empty()) return false;
  *out = std::move(list);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  std::string probe_path;
  bool probe_bwd = false;
  cb::Flags flags("bench_ops_attention");
  flags.custom("seqs", "T,T,...", [&](const std::string& v) { return parse_list(v, &c.seqs); })
      .add("batch", &c.batch).add("heads", &c.heads).add("kv-heads", &c.kv_heads)
      .add("dim", &c.dim).add("causal", &c.causal).add("threads", &c.threads)
      .add("iters", &c.iters).add("rss", &c.rss).add("probe", &probe_path)
      .add("probe-bwd", &probe_bwd).add("passes", &c.passes).add("device", &c.device)
      .add("dtype", &c.dtype);
  if (!flags.parse(argc, argv)) return 2;
  if (!cb::parse_device(c.device, c.dev)) {
    std::printf("{\"bench\": \"attention\", \"device\": \"%s\", \"skipped\": \"no CUDA device\"}\n",
                c.device.c_str());
    return 0;
  }
  if (c.dev.is_cuda()) c.rss = false;  // ru_maxrss says nothing about device memory
  at::set_num_threads(c.threads);
  if (!probe_path.empty()) return probe(c, c.seqs.at(0), probe_path == "fused", probe_bwd);

  const auto o = concord::ops::AttentionOptions().causal(c.causal);
  const bool with_sdpa = kHaveSdpa && c.dev.is_cuda() && c.heads == c.kv_heads;
  for (int64_t T : c.seqs) {
    const Tensors t = make(c, T);
    const double scores_bytes = 4.0 * c.batch * c.heads * T * T;
    for (bool backward : {false, true}) {
      if (!c.has(backward ? "fwd+bwd" : "fwd")) continue;
      auto time = [&](Path p) {
        return cb::median_ms_on(c.dev, [&] { run_pass(t, o, p, backward); }, c.iters);
      };
      const double naive = time(Path::Naive);
      const double fused = time(Path::Fused);
      const double sdpa_ms = with_sdpa ? time(Path::Sdpa) : 0.0;
      long rss_naive = -1, rss_fused = -1;
      if (c.rss) {
        rss_naive = probe_in_child(argv[0], c, T, false, backward);
        rss_fused = probe_in_child(argv[0], c, T, true, backward);
      }
      std::printf(
          "{\"bench\": \"attention\", \"pass\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", "
          "\"B\": %lld, \"H\": %lld, \"Hkv\": %lld, "
          "\"T\": %lld, \"D\": %lld, \"causal\": %s, \"threads\": %d, \"naive_ms\": %.3f, "
          "\"fused_ms\": %.3f, \"time_ratio\": %.2f, \"sdpa_ms\": %.3f, \"sdpa_ratio\": %.2f, "
          "\"naive_scores_bytes\": %.0f, "
          "\"naive_peak_rss_delta_kib\": %ld, \"fused_peak_rss_delta_kib\": %ld, "
          "\"memory_ratio\": %.1f}\n",
          backward ? "fwd+bwd" : "fwd", c.device.c_str(), c.dtype.c_str(), (long long)c.batch,
          (long long)c.heads, (long long)c.kv_heads, (long long)T, (long long)c.dim,
          c.causal ? "true" : "false", c.threads, naive, fused, naive / fused, sdpa_ms,
          with_sdpa ? sdpa_ms / fused : 0.0, scores_bytes, rss_naive, rss_fused,
          rss_fused > 0 ? double(rss_naive) / double(rss_fused) : 0.0);
      std::fflush(stdout);
    }
    // Decode: one new token against a T-position KV cache (the split-K schedule).
    if (c.has("decode")) {
      torch::NoGradGuard g;
      const auto q1 = t.q.narrow(2, T - 1, 1).contiguous();
      const int iters = std::max(c.iters, 20);
      const double naive = cb::median_ms_on(
          c.dev, [&] { concord::ops::attention_reference(q1, t.k, t.v, o); }, iters);
      const double fused = cb::median_ms_on(
          c.dev, [&] { concord::ops::attention_decode(q1, t.k, t.v, o); }, iters);
      std::printf(
          "{\"bench\": \"attention\", \"pass\": \"decode\", \"device\": \"%s\", \"dtype\": \"%s\", "
          "\"B\": %lld, \"H\": %lld, "
          "\"Hkv\": %lld, \"T\": %lld, \"D\": %lld, \"threads\": %d, \"naive_ms\": %.3f, "
          "\"fused_ms\": %.3f, \"time_ratio\": %.2f}\n",
          c.device.c_str(), c.dtype.c_str(), (long long)c.batch, (long long)c.heads,
          (long long)c.kv_heads, (long long)T, (long long)c.dim, c.threads, naive, fused,
          naive / fused);
      std::fflush(stdout);
    }
  }
  return 0;
}
