#!/usr/bin/env python3
"""Concord's safetensors loader against Python's on the same ~1 GB file, in the same run.

Writes 16 float32 tensors of 64 MiB with safetensors.torch.save_file into a temporary folder,
then alternates, --repeats times: the C++ binary (bench_safetensors_load --file F, which opens,
gets and sums every tensor) and Python (safe_open(F, framework="pt") + get_tensor + sum of every
tensor). Both run with the file in the page cache (it was just written, and every run reads it).
Prints each run's seconds and the ratio of the medians (Python / Concord: > 1 means Concord is
faster), as one JSON object on the last line.

Usage: bench_safetensors_load.py --binary build/benchmarks/bench_safetensors_load
                                 [--tensors 16] [--mib 64] [--repeats 5] [--dir /tmp]
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import safetensors
from safetensors import safe_open
from safetensors.torch import save_file


def python_load(path):
    start = time.perf_counter()
    tensors = []
    with safe_open(path, framework="pt") as f:
        for name in f.keys():
            tensors.append(f.get_tensor(name))
    get_seconds = time.perf_counter() - start
    checksum = sum(float(t.sum()) for t in tensors)
    seconds = time.perf_counter() - start
    again = time.perf_counter()
    sum(float(t.sum()) for t in tensors)  # the pages are mapped now: the sums alone
    return {"seconds": seconds, "get_seconds": get_seconds, "checksum": checksum,
            "sum_again_seconds": time.perf_counter() - again}


def concord_load(binary, path):
    out = subprocess.run([binary, "--file", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--tensors", type=int, default=16)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "bench.safetensors")
        n = args.mib * 1024 * 1024 // 4
        gen = torch.Generator().manual_seed(0)
        save_file({f"layer.{i:02d}.weight": torch.rand(n, generator=gen)
                   for i in range(args.tensors)}, path)
        size = os.path.getsize(path)
        python_load(path)  # warm the page cache once for both sides
        ours, theirs = [], []
        for _ in range(args.repeats):
            c = concord_load(args.binary, path)
            p = python_load(path)
            # Same tensors, same sums: float32 sums of the same data in the same order.
            assert abs(c["checksum"] - p["checksum"]) <= 1e-6 * abs(p["checksum"]), (c, p)
            ours.append(c)
            theirs.append(p)
        med = lambda runs, key: statistics.median(r[key] for r in runs)
        result = {
            "file_bytes": size,
            "torch_threads": torch.get_num_threads(),
            "safetensors_version": safetensors.__version__,
            "concord_seconds": [round(r["seconds"], 4) for r in ours],
            "python_seconds": [round(r["seconds"], 4) for r in theirs],
            "concord_zero_copy": f"{ours[0]['zero_copy']}/{ours[0]['tensors']}",
            "concord_get_seconds_median": med(ours, "get_seconds"),
            "python_get_seconds_median": med(theirs, "get_seconds"),
            "concord_sum_again_seconds_median": med(ours, "sum_again_seconds"),
            "python_sum_again_seconds_median": med(theirs, "sum_again_seconds"),
            "ratio_python_over_concord": med(theirs, "seconds") / med(ours, "seconds"),
            # The fastest runs are the least disturbed by other load on the machine.
            "ratio_of_fastest_runs": min(r["seconds"] for r in theirs)
            / min(r["seconds"] for r in ours),
        }
        print(json.dumps(result))


if __name__ == "__main__":
    main()
