#!/usr/bin/env python3
"""The LM head's three GEMMs in the two layouts a loss can use, with the BLAS LibTorch ships
(pip torch: MKL), the same thread count as the training-step benchmark. Concord's fused loss
(ops/linear_cross_entropy.h) computes class-major logits; the composite computes token-major ones.

  ~/.cache/concord/venv/bin/python benchmarks/bench_head_layout.py [--tokens 1024] [--dim 768]
      [--vocab 50257] [--threads 2] [--repeat 5]

token-major (composite):  Z = h W^T [N, V];  dh = G W;      dW = G^T h
class-major (fused):      Z = W h^T [V, N];  dh = G^T W;    dW = G h
Each product writes into a preallocated output (as the fused loss does with its kept buffer);
the time is the median of --repeat runs after one warm-up. Prints both sides and the ratio.
"""
import argparse
import statistics
import time

import torch


def timed(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, d, v = args.tokens, args.dim, args.vocab
    h, w = torch.randn(n, d), torch.randn(v, d)
    z_tok, g_tok = torch.empty(n, v), torch.randn(n, v)
    z_cls, g_cls = torch.empty(v, n), g_tok.t().contiguous()
    dh, dw = torch.empty(n, d), torch.empty(v, d)
    flop = 2 * n * d * v
    sides = {
        "token-major (composite)": [
            ("Z = h W^T", lambda: torch.mm(h, w.t(), out=z_tok)),
            ("dh = G W", lambda: torch.mm(g_tok, w, out=dh)),
            ("dW = G^T h", lambda: torch.mm(g_tok.t(), h, out=dw))],
        "class-major (fused)": [
            ("Z = W h^T", lambda: torch.mm(w, h.t(), out=z_cls)),
            ("dh = G^T W", lambda: torch.mm(g_cls.t(), w, out=dh)),
            ("dW = G h", lambda: torch.mm(g_cls, h, out=dw))],
    }
    print(f"LM head: {n} tokens, d {d}, V {v}; torch {torch.__version__}, {args.threads} threads; "
          f"median of {args.repeat}")
    totals = {}
    for side, products in sides.items():
        parts = []
        for name, fn in products:
            ms = timed(fn, args.repeat)
            parts.append(f"{name} {ms:.0f} ms ({flop / ms / 1e6:.0f} GFLOP/s)")
            totals[side] = totals.get(side, 0.0) + ms
        print(f"  {side:24s} {'; '.join(parts)}; total {totals[side]:.0f} ms")
    a, b = totals.values()
    print(f"  class-major / token-major: {a / b:.2f}x faster")


if __name__ == "__main__":
    main()
