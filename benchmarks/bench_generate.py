#!/usr/bin/env python3
"""Greedy generation with a KV cache: Concord's lm::generate (bench_generate) vs transformers'
`generate` (the baseline: default cache and attention implementation), same model folder, same
prompts, same number of new tokens, same run, same thread count; the generated ids must be
identical.

  ~/.cache/concord/venv/bin/python benchmarks/bench_generate.py \
      --bin build/benchmarks/bench_generate [--models gpt2,llama,gpt2-mini,llama-mini] [--batch 1] \
      [--prompt-len 32] [--new-tokens 64] [--repeat 3] [--threads 2] [--rounds 1]

Models (random weights, built here with a fixed seed and saved with save_pretrained to a temp
folder, no EOS so every call makes exactly --new-tokens tokens):
  gpt2        GPT-2 small's shapes: d 768, 12 layers, 12 heads, vocab 50257 (124M parameters)
  llama       a Llama of similar size: d 768, 12 layers, 12 query / 4 kv heads, SwiGLU 2048,
              vocab 32000, untied head (125M)
  gpt2-mini   d 256, 4 layers, 4 heads, FFN 1024, vocab 8192 (5M)
  llama-mini  d 256, 4 layers, 4 query / 2 kv heads, SwiGLU 688, vocab 8192, untied (6M)
At 124M parameters one new token reads ~0.5 GB of weights, so both sides spend their time in
BLAS matrix-vector products and the ratio mostly compares BLAS libraries; the mini models show
the per-token cost of the framework around them (Python and module dispatch vs C++).
Weights are redrawn from N(0, 0.05^2) so the logits are spread enough for greedy argmax not to
hinge on float rounding. Both sides: one warm-up call, then the median of --repeat calls, prefill
included; tokens/s counts new tokens. Each of --rounds rounds runs Concord, then transformers;
the figures are medians over rounds (the machine may be shared: alternating evens out load).
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
import transformers

transformers.utils.logging.disable_progress_bar()  # keep the output to the table


# name -> (family, hidden, layers, heads, kv heads, FFN width, vocab)
MODELS = {
    "gpt2": ("gpt2", 768, 12, 12, 12, 3072, 50257),
    "llama": ("llama", 768, 12, 12, 4, 2048, 32000),
    "gpt2-mini": ("gpt2", 256, 4, 4, 4, 1024, 8192),
    "llama-mini": ("llama", 256, 4, 4, 2, 688, 8192),
}


def build(name):
    if name not in MODELS:
        sys.exit(f"bench_generate.py: unknown model '{name}' ({', '.join(MODELS)})")
    family, d, layers, heads, kv_heads, ffn, vocab = MODELS[name]
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=d, n_layer=layers, n_head=heads, n_inner=ffn,
                                         vocab_size=vocab, resid_pdrop=0.0, embd_pdrop=0.0,
                                         attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    else:
        config = transformers.LlamaConfig(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                                          num_key_value_heads=kv_heads, intermediate_size=ffn, vocab_size=vocab,
                                          max_position_embeddings=2048, tie_word_embeddings=False,
                                          bos_token_id=None, eos_token_id=None, pad_token_id=None)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.05)
    model.eval()
    return model


def hf_generate(model, prompts, new_tokens, repeat):
    ids = torch.tensor(prompts, dtype=torch.int64)
    mask = torch.ones_like(ids)
    kwargs = dict(attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  do_sample=False, use_cache=True, pad_token_id=0, eos_token_id=None)
    out = None
    times = []
    with torch.inference_mode():
        for r in range(repeat + 1):  # call 0 is the warm-up
            t0 = time.perf_counter()
            out = model.generate(ids, **kwargs)
            t1 = time.perf_counter()
            if r > 0:
                times.append((t1 - t0) * 1e3)
    return out[:, ids.shape[1]:].tolist(), statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the bench_generate binary")
    ap.add_argument("--models", default="gpt2,llama,gpt2-mini,llama-mini")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    failures = 0
    print(f"batch {args.batch}, prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, greedy, "
          f"fp32, {args.threads} threads each; median of {args.repeat} calls after a warm-up; "
          f"transformers {transformers.__version__}, torch {torch.__version__}")
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build(name)
        prompts = torch.randint(model.config.vocab_size, (args.batch, args.prompt_len)).tolist()
        our_times, their_times = [], []
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            model.save_pretrained(folder)
            (Path(tmp) / "prompts.json").write_text(json.dumps(prompts))
            ids_out = Path(tmp) / "ids.json"
            for _ in range(args.rounds):
                run = subprocess.run(
                    [args.bin, "--model", str(folder), "--prompts", str(Path(tmp) / "prompts.json"),
                     "--new-tokens", str(args.new_tokens), "--repeat", str(args.repeat),
                     "--threads", str(args.threads), "--ids-out", str(ids_out)],
                    check=True, capture_output=True, text=True)
                ours = json.loads(run.stdout)
                our_ids = json.loads(ids_out.read_text())
                our_times.append(ours["median_ms"])
                their_ids, ms = hf_generate(model, prompts, args.new_tokens, args.repeat)
                their_times.append(ms)
        our_ms, their_ms = statistics.median(our_times), statistics.median(their_times)
        same = our_ids == their_ids
        failures += not same
        n = args.batch * args.new_tokens
        params = sum(p.numel() for p in model.parameters())
        print(f"{name} ({params / 1e6:.0f}M parameters, attention {model.config._attn_implementation})")
        print(f"  {'concord (libtorch ' + ours['libtorch'] + ')':34s} {our_ms:8.0f} ms "
              f"{n / our_ms * 1e3:8.1f} tok/s")
        print(f"  {'transformers generate':34s} {their_ms:8.0f} ms {n / their_ms * 1e3:8.1f} tok/s")
        # One pass over the weights per decoding step (prefill counted as one step too): the
        # fastest any implementation could run this call at the measured read bandwidth.
        steps = args.new_tokens
        floor_ms = ours["weights_read_ms"] * steps
        print(f"  {'weight-read floor':34s} {floor_ms:8.0f} ms {n / floor_ms * 1e3:8.1f} tok/s "
              f"({ours['weights_bytes'] / 1e6:.0f} MB read once per step, "
              f"{ours['weights_bytes'] / ours['weights_read_ms'] / 1e6:.1f} GB/s); "
              f"transformers at {floor_ms / their_ms:.0%} of it, concord at {floor_ms / our_ms:.0%}")
        print(f"  ratio concord / transformers: {their_ms / our_ms:.2f}x "
              f"(per round: {', '.join(f'{t / o:.2f}x' for o, t in zip(our_times, their_times))}); "
              f"ids identical: {'yes' if same else 'NO'}")
        if not same:
            first = next(i for i, (a, b) in enumerate(zip(our_ids[0], their_ids[0])) if a != b) \
                if our_ids and their_ids and our_ids[0] != their_ids[0] else None
            print(f"  first difference in row 0 at new token {first}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
