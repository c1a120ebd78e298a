#!/usr/bin/env python3
"""GRAPE scoring throughput: Concord's grape_score vs transformers (the baseline) computing the
same scores -- mean log-probability of each response's tokens after the paper's template
"Question: {x}\\nAnswer: " -- on the same model, tokenizer and pool, in the same run, with the
same thread count. Also compares the scores themselves (max abs difference; goal < 1e-4).

  /root/.cache/concord/venv/bin/python benchmarks/bench_grape_score.py \\
      --bin build/benchmarks/bench_grape_score [--shape mini|gpt2] [--pools 32] [--threads N]

The model is a random-weight GPT-2 built from a config (nothing is downloaded) and saved once
with save_pretrained to a temp folder: `gpt2` is GPT-2 small's shape (12 layers, d 768, 12 heads,
vocab 50257), `mini` a smaller one (6 layers, d 384, 6 heads, same vocab) that runs in a minute
on 2 cores. Tokenizer: tests/fixtures/tokenizers/gpt2/tokenizer.json (byte-level BPE), read by
`tokenizers` on the Python side and by Concord's BpeTokenizer. The pool is seeded random English
words: `--pools` instructions of --prompt-words words (default 20-80), each with --responses
candidates (default 4) of --response-words words (default 10-60); the fixture tokenizer's small
vocabulary makes about 3 tokens a word.

The baseline is what a transformers user writes for this: candidates sorted by length, batches
of --batch-size right-padded rows, `model(input_ids, attention_mask).logits`, log_softmax,
gather the response tokens, under torch.inference_mode() in fp32 (default SDPA attention).
Concord runs with its defaults (one prompt pass per instruction into a KV cache reused by its
responses; only response positions through the LM head), and once more with share_prompt off
(every pair a row, sorted by length across pools).
Both sides: a warm-up pass over the first 4 pools, then the best of --repeat passes over all.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "Question: {instruction}\nAnswer: "
WORDS = ("the of and to in is was for on that with as by at from his her they this which be "
         "have are one all were when there can an your more some time would about what so "
         "number people water first been called who oil now find long down day did get come "
         "made may part over new sound take only little work know place year live me back give "
         "most very after thing our just name good sentence man think say great where help "
         "through much before line right too mean old any same tell boy follow came want show "
         "also around form three small set put end does another well large must big even such "
         "because turn here why ask went men read need land different home us move try kind "
         "hand picture again change off play spell air away animal house point page letter "
         "mother answer found study still learn should america world").split()


def make_pool(n_pools, n_responses, prompt_words, response_words, seed):
    rng = random.Random(seed)
    text = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
    pools = []
    for i in range(n_pools):
        instruction = text(*prompt_words).capitalize() + "?"
        responses = [{"text": text(*response_words).capitalize() + ".", "source": f"model{j}"}
                     for j in range(n_responses)]
        pools.append({"id": f"p{i}", "instruction": instruction, "responses": responses})
    return pools


def hf_scores(model, tok, pools, batch_size):
    items = []  # (prompt ids, response ids)
    for p in pools:
        prompt = tok.encode(TEMPLATE.format(instruction=p["instruction"]), add_special_tokens=True).ids
        for r in p["responses"]:
            items.append((prompt, tok.encode(r["text"], add_special_tokens=False).ids))
    order = sorted(range(len(items)), key=lambda i: -(len(items[i][0]) + len(items[i][1])))
    scores = [None] * len(items)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(items[i][0]) + len(items[i][1]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                seq = items[i][0] + items[i][1]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            for row, i in enumerate(batch):
                p, r = items[i]
                pos = torch.arange(len(p) - 1, len(p) + len(r) - 1)
                lp = logp[row, pos, torch.tensor(r)]
                scores[i] = (lp.double().mean().item(), len(r))
    return scores


def best_of(fn, repeat, warm_up):
    warm_up()
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the bench_grape_score binary")
    ap.add_argument("--shape", choices=["mini", "gpt2"], default="mini")
    ap.add_argument("--pools", type=int, default=48)
    ap.add_argument("--responses", type=int, default=4, help="candidates per instruction")
    ap.add_argument("--prompt-words", default="20,80", help="instruction length range, in words")
    ap.add_argument("--response-words", default="10,60", help="response length range, in words")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    shape = {"mini": dict(n_embd=384, n_layer=6, n_head=6),
             "gpt2": dict(n_embd=768, n_layer=12, n_head=12)}[args.shape]
    config = transformers.GPT2Config(vocab_size=50257, n_positions=1024, **shape)
    model = transformers.GPT2LMHeadModel(config).float().eval()
    tokenizer_path = ROOT / "tests/fixtures/tokenizers/gpt2/tokenizer.json"
    tok = Tokenizer.from_file(str(tokenizer_path))
    span = lambda s: tuple(int(v) for v in s.split(","))
    pools = make_pool(args.pools, args.responses, span(args.prompt_words), span(args.response_words),
                      args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.save_pretrained(model_dir, safe_serialization=True)
        pool_path = Path(tmp) / "pool.jsonl"
        pool_path.write_text("".join(json.dumps(p) + "\n" for p in pools))

        t_hf, hf = best_of(lambda: hf_scores(model, tok, pools, args.batch_size), args.repeat,
                           lambda: hf_scores(model, tok, pools[:4], args.batch_size))

        env = dict(os.environ, CONCORD_NUM_THREADS=str(args.threads))
        runs = {}
        for share in (1, 0):
            scores_path = Path(tmp) / f"scores{share}.jsonl"
            out = subprocess.run(
                [args.bin, str(model_dir), str(tokenizer_path), str(pool_path),
                 "--batch-size", str(args.batch_size), "--repeat", str(args.repeat),
                 "--share-prompt", str(share), "--scores-out", str(scores_path)],
                check=True, capture_output=True, text=True, env=env)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            scores = []
            for line in scores_path.read_text().splitlines():
                for c in json.loads(line)["candidates"]:
                    scores.append((c["score"], c["response_tokens"]))
            runs[share] = (result, scores)

    response_tokens = sum(n for _, n in hf)
    hf_rate = response_tokens / t_hf
    print(f"model: random GPT-2 '{args.shape}' {shape}, vocab 50257, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, fp32")
    print(f"pool: {args.pools} instructions ({args.prompt_words} words) x {args.responses} responses "
          f"({args.response_words} words), {response_tokens} response tokens, "
          f"{runs[1][0]['prompt_tokens']} prompt tokens (once per pool); "
          f"batch {args.batch_size}; {args.threads} threads each; best of {args.repeat} after a warm-up")
    print(f"  {'transformers ' + transformers.__version__ + ' (torch ' + torch.__version__ + ')':44s} "
          f"{hf_rate:9.1f} response tokens/s  ({t_hf:.2f} s)")
    worst = 0.0
    for share, label in ((1, "concord grape_score (default, shared prompts)"),
                         (0, "concord grape_score (share_prompt off)")):
        result, scores = runs[share]
        assert len(scores) == len(hf), "different candidate counts"
        for (a, na), (b, nb) in zip(scores, hf):
            assert na == nb, f"different token counts {na} vs {nb}"
            worst = max(worst, abs(a - b))
        print(f"  {label:44s} {result['tokens_per_s']:9.1f} response tokens/s  "
              f"({result['seconds']:.2f} s)  ratio {result['tokens_per_s'] / hf_rate:.2f}x")
    print(f"max |score difference| vs transformers: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
