#!/usr/bin/env python3
"""Training-step throughput: Concord's CausalLM (bench_train_step) vs PyTorch eager (the
baseline: transformers' GPT2LMHeadModel, default attention implementation), same model, same
weights, same batches, same run, same thread count.

  ~/.cache/concord/venv/bin/python benchmarks/bench_train_step.py \
      --bin build/benchmarks/bench_train_step [--config configs/models/gpt2.json] \
      [--batch 4] [--seq 256] [--steps 5] [--warmup 2] [--threads 2] [--rounds 1] \
      [--optimizers torch,concord] [--gemm-share]

One step is: zero the gradients, forward, mean cross-entropy over every position, backward,
AdamW (lr 1e-4, betas (0.9, 0.95), eps 1e-8, weight decay 0.1). Concord computes the loss as its
trainer does, CausalLM::token_loss (the LM head and the cross-entropy fused; no [B, T, V]
logits), the baseline as transformers does (logits, then F.cross_entropy). Concord runs once per optimizer
named: `torch` is torch::optim::AdamW (decay on every parameter, as the baseline's
torch.optim.AdamW), `concord` is Concord's train::AdamW (one fused CPU pass; biases and norm
gains exempt from decay, so its losses part from the baseline's after the first step). No dropout
on either side (Concord has none; the baseline's is set to 0). The model is built here from the
Concord config's shapes, saved with save_pretrained to a temp folder, and loaded by both sides,
so the first step's loss must agree (checked: a mismatch means the two are not the same
computation). Each round runs Concord (each optimizer), then the baseline; tokens/s is
batch * seq over the median timed step (median over rounds). Prints a table and the ratios.
--gemm-share also profiles one step of each side and prints the time each spends in GEMMs.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers

transformers.utils.logging.disable_progress_bar()  # keep the output to the table

ROOT = Path(__file__).resolve().parents[1]


def gpt2_config(concord_config):
    c = json.loads(Path(concord_config).read_text())
    if c["family"] != "gpt2":
        sys.exit(f"bench_train_step.py: the baseline is GPT2LMHeadModel; {concord_config} is {c['family']}")
    return transformers.GPT2Config(
        vocab_size=c["vocab_size"], n_embd=c["hidden_size"], n_layer=c["num_layers"],
        n_head=c["num_heads"], n_positions=c.get("max_position_embeddings", 1024),
        n_inner=c.get("intermediate_size"), layer_norm_epsilon=c.get("norm_eps", 1e-5),
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=c.get("bos_token_id"), eos_token_id=c.get("eos_token_id"))


def train_eager(model_dir, ids, warmup, lr):
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    vocab = model.config.vocab_size
    losses, times = [], []
    for s in range(ids.shape[0]):
        inputs, targets = ids[s, :, :-1], ids[s, :, 1:]
        t0 = time.perf_counter()
        opt.zero_grad()
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        loss.backward()
        opt.step()
        value = loss.item()
        t1 = time.perf_counter()
        losses.append(value)
        if s >= warmup:
            times.append((t1 - t0) * 1e3)
    return {"losses": losses, "step_ms": times, "median_step_ms": statistics.median(times),
            "attn_implementation": model.config._attn_implementation}


GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def gemm_share(model_dir, ids, lr):
    """Share of one eager step's CPU time spent inside matrix products (self time of the ATen
    GEMM ops, torch.profiler). Both sides call the same BLAS for these products, so even a
    framework whose every other op took no time could not be faster than 1 / share."""
    from torch.profiler import ProfilerActivity, profile
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    vocab = model.config.vocab_size

    def step(s):
        opt.zero_grad()
        logits = model(input_ids=ids[s, :, :-1]).logits
        F.cross_entropy(logits.reshape(-1, vocab), ids[s, :, 1:].reshape(-1)).backward()
        opt.step()

    step(0)  # warm-up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(1)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    return (gemm / total if total > 0 else float("nan")), gemm / 1e3


def trace_gemm_ms(path):
    """GEMM self time and span (ms) of a Chrome trace from bench_train_step --profile. Self time
    is an event's duration less its children's on the same thread."""
    events = [e for e in json.loads(Path(path).read_text()) if e.get("ph") == "X"]
    by_thread = {}
    for e in events:
        by_thread.setdefault(e["tid"], []).append(e)
    gemm = 0.0
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # (end, index into self_us)
        self_us = []
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                stack.pop()
            if stack:
                self_us[stack[-1][1]][1] -= e["dur"]
            self_us.append([e["name"], e["dur"]])
            stack.append((e["ts"] + e["dur"], len(self_us) - 1))
        gemm += sum(us for name, us in self_us if name in GEMM_OPS)
    span = max(e["ts"] + e["dur"] for e in events) - min(e["ts"] for e in events)
    return gemm / 1e3, span / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the bench_train_step binary")
    ap.add_argument("--config", default=str(ROOT / "configs/models/gpt2.json"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="Concord-then-baseline rounds")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--gemm-share", action="store_true",
                    help="also profile one step of each side: the time in GEMMs, and the ratio "
                         "ceiling the baseline's share implies for a framework on the same BLAS")
    ap.add_argument("--optimizers", default="torch,concord",
                    help="Concord's optimizers to run: torch (torch::optim::AdamW), concord (train::AdamW)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = gpt2_config(args.config)
    total = args.warmup + args.steps
    tokens = args.batch * args.seq
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        transformers.GPT2LMHeadModel(config).save_pretrained(model_dir)
        ids = torch.randint(config.vocab_size, (total, args.batch, args.seq + 1), dtype=torch.int64)
        data = Path(tmp) / "ids.bin"
        data.write_bytes(ids.numpy().tobytes())
        optimizers = args.optimizers.split(",")
        ours = {name: [] for name in optimizers}
        theirs = []
        for r in range(args.rounds):
            for name in optimizers:
                out = subprocess.run(
                    [args.bin, "--model", str(model_dir), "--data", str(data), "--batch", str(args.batch),
                     "--seq", str(args.seq), "--steps", str(args.steps), "--warmup", str(args.warmup),
                     "--threads", str(args.threads), "--lr", str(args.lr), "--optimizer", name],
                    check=True, capture_output=True, text=True)
                ours[name].append(json.loads(out.stdout))
            theirs.append(train_eager(model_dir, ids, args.warmup, args.lr))
            print(f"round {r + 1}: " + ", ".join(f"concord/{n} {ours[n][-1]['median_step_ms']:.0f} ms"
                                                  for n in optimizers)
                  + f", eager {theirs[-1]['median_step_ms']:.0f} ms per step", flush=True)
        share = gemm_share(model_dir, ids, args.lr) if args.gemm_share else None
        ours_gemm = None
        if args.gemm_share:
            trace = Path(tmp) / "concord_trace.json"
            subprocess.run(
                [args.bin, "--model", str(model_dir), "--data", str(data), "--batch", str(args.batch),
                 "--seq", str(args.seq), "--steps", "1", "--warmup", "1", "--threads", str(args.threads),
                 "--lr", str(args.lr), "--optimizer", optimizers[-1], "--profile", str(trace)],
                check=True, capture_output=True, text=True)
            ours_gemm = trace_gemm_ms(trace)

    e_ms = statistics.median(t["median_step_ms"] for t in theirs)
    first = ours[optimizers[0]][0]
    print(f"model {args.config}: {first['parameters']:,} parameters; batch {args.batch} x seq "
          f"{args.seq} = {tokens} tokens a step; fp32, {args.threads} threads each; "
          f"{args.warmup} warm-up + {args.steps} timed steps, {args.rounds} round(s)")
    print(f"  {'pytorch eager ' + torch.__version__ + ' (' + theirs[0]['attn_implementation'] + ')':40s} "
          f"{e_ms:9.0f} ms/step {tokens / e_ms * 1e3:9.1f} tok/s")
    ok = True
    for name in optimizers:
        c_ms = statistics.median(o["median_step_ms"] for o in ours[name])
        run = ours[name][0]
        label = f"concord (libtorch {run['libtorch']}, {name} AdamW)"
        # Each round's two sides ran back to back, so a round's ratio shares that round's load.
        per_round = [t["median_step_ms"] / o["median_step_ms"] for o, t in zip(ours[name], theirs)]
        print(f"  {label:40s} {c_ms:9.0f} ms/step {tokens / c_ms * 1e3:9.1f} tok/s   "
              f"ratio {e_ms / c_ms:.2f}x (per round {', '.join(f'{r:.2f}' for r in per_round)}; "
              f"median {statistics.median(per_round):.2f}x)")
        diff = max(abs(a - b) for a, b in zip(run["losses"], theirs[0]["losses"]))
        print(f"    first-step loss {run['losses'][0]:.6f} vs eager {theirs[0]['losses'][0]:.6f}; "
              f"largest difference over {total} steps {diff:.2e}")
        # Same weights and batch: the first loss agrees to float rounding, or the comparison is void.
        ok = ok and abs(run["losses"][0] - theirs[0]["losses"][0]) < 1e-3
    if share is not None:
        fraction, eager_gemm_ms = share
        print(f"  eager step's time in GEMMs ({', '.join(GEMM_OPS)}; torch.profiler self time): "
              f"{eager_gemm_ms:.0f} ms, {fraction:.1%}; ceiling for a framework that ran the same "
              f"GEMMs and nothing else: {1 / fraction:.2f}x")
        gemm_ms, span_ms = ours_gemm
        print(f"  concord's profiled step ({optimizers[-1]} AdamW): {gemm_ms:.0f} ms of its {span_ms:.0f} ms "
              f"in the same GEMM ops ({gemm_ms / span_ms:.1%}), everything else {span_ms - gemm_ms:.0f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
