#!/usr/bin/env python3
"""Encode throughput: Concord's BpeTokenizer vs the Python `tokenizers` package (the baseline),
same tokenizer.json, same text, same run, one thread each (RAYON_NUM_THREADS=1).

  /root/.cache/concord/venv/bin/python benchmarks/bench_tokenizer.py \
      --bin build/benchmarks/bench_tokenizer [--tokenizer tests/fixtures/tokenizers/llama3/tokenizer.json]

The text is every TUMLU-mini test item (question + choices; Latin, Cyrillic and Arabic script),
read at run time from ../shared/data/tumlu-mini, plus English and code, one document each.
Also checks that both give the same ids for every document. Prints a table and the ratios.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def documents(tumlu: Path):
    docs = []
    for path in sorted(tumlu.glob("*/test/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                item = json.loads(line)
                docs.append(item["question"] + "\n" + "\n".join(item["choices"]))
    english = ("The quick brown fox jumps over the lazy dog. It's 2024 and we'll tokenize "
               "1,234,567 words; isn't that fun? ") * 8
    code = "def f(x):\n    for i in range(10):\n        x += i  # comment\n    return x\n" * 6
    docs += [english, code] * 200
    return docs


def best_of(fn, repeat):
    fn()  # warm-up: fills the BPE cache, as Concord's warm-up pass does
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the bench_tokenizer binary")
    ap.add_argument("--tokenizer", default=str(ROOT / "tests/fixtures/tokenizers/llama3/tokenizer.json"))
    ap.add_argument("--tumlu", default=str(ROOT.parent / "shared/data/tumlu-mini"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    docs = documents(Path(args.tumlu))
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    tok = Tokenizer.from_file(args.tokenizer)

    t_encode = best_of(lambda: [tok.encode(d, add_special_tokens=False) for d in docs], args.repeat)
    t_batch = best_of(lambda: tok.encode_batch(docs, add_special_tokens=False), args.repeat)
    hf_ids = [e.ids for e in tok.encode_batch(docs, add_special_tokens=False)]

    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "docs.jsonl"
        text.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
        ids_out = Path(tmp) / "ids.jsonl"
        out = subprocess.run([args.bin, args.tokenizer, str(text), "--repeat", str(args.repeat),
                              "--ids-out", str(ids_out)], check=True, capture_output=True, text=True)
        concord = json.loads(out.stdout)
        concord_ids = [json.loads(line) for line in ids_out.read_text().splitlines()]

    mismatches = sum(a != b for a, b in zip(concord_ids, hf_ids)) + abs(len(concord_ids) - len(hf_ids))
    mb = nbytes / 1e6
    rows = [("tokenizers encode (loop)", mb / t_encode), ("tokenizers encode_batch", mb / t_batch),
            ("concord encode (loop)", concord["mb_per_s"])]
    print(f"tokenizer {args.tokenizer}")
    print(f"text: {len(docs)} documents, {mb:.2f} MB, {concord['tokens']} tokens; one thread each; "
          f"best of {args.repeat} after a warm-up")
    for name, rate in rows:
        print(f"  {name:28s} {rate:8.2f} MB/s")
    print(f"ratio concord / tokenizers encode:       {concord['mb_per_s'] / (mb / t_encode):.2f}x")
    print(f"ratio concord / tokenizers encode_batch: {concord['mb_per_s'] / (mb / t_batch):.2f}x")
    print(f"documents with different ids: {mismatches} of {len(docs)}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
