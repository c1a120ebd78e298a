#!/usr/bin/env python3
"""Reward-model training step: Concord's rlhf reward trainer (`bench_rlhf reward`) vs TRL's
RewardTrainer (the baseline: trl 1.12.0 on transformers 5.24, PyTorch eager, CPU), same model
folder, same preference pairs, same batch size and max length, same run, same thread count.

  ~/.cache/concord/venv/bin/python benchmarks/bench_reward_step.py \\
      --bin build/benchmarks/bench_rlhf [--shape mini|gpt2|small-vocab] [--batch-size 4] \\
      [--max-length 128] [--steps 3] [--warmup 1] [--threads 2] [--prompt-fraction F] \\
      [--share-prefixes on|off] [--json-out FILE]

(trl comes with `scripts/python-env.sh --bench`.) Without the binary the script times TRL alone
and says so.

Model: a random-weight GPT2ForSequenceClassification (num_labels 1, transformers' own init),
built here from a config with a fixed seed -- nothing is downloaded -- and saved with
save_pretrained to a temp folder with the tokenizer copied in. `mini` (default) is 6 layers,
d 384, 6 heads, vocab 50257 (30M parameters, 19M of them the embedding, as GPT-2's vocabulary
makes them); `gpt2` is GPT-2 small's shape (12 layers, d 768); `small-vocab` is `mini` with the
tokenizer's own vocabulary (1203), where the backbone dominates. Tokenizer:
tests/fixtures/tokenizers/gpt2/tokenizer.json (byte-level BPE, <|endoftext|> = id 0), which
is also the model's bos/eos/pad id.

Data: PAIRS.jsonl, one {"prompt", "chosen", "rejected", "user"} per line (user: "0"/"1", a string
as Concord's preference records have it; unused by TRL), seeded random English words. The prompt
is "Question: <4-12 words>?\nAnswer:" (about 28% of the row's tokens), or with --prompt-fraction F
the first such prompt of at least F of the row; TRL's work does not depend on it. Concord runs
each pair's common prefix once by default (--share-prefixes on; its objective's default), TRL
both full rows: the ratio at a large F shows what that saves. Every
prompt + chosen and prompt + rejected tokenizes to exactly --max-length - 1 tokens, so with the
EOS TRL appends each row is --max-length long: no row is filtered out (TRL drops pairs longer
than max_length rather than truncating them) and every step does the same work. The binary
tokenizes the pairs the same way (prompt + response as one string, then the EOS id; not
Concord's chat templates), so both sides see the same ids. Each step is one batch of --batch-size pairs = 2B rows of L
tokens: forward, loss -logsigmoid(r_chosen - r_rejected), backward, AdamW (TRL's defaults:
lr 1e-4, linear decay, weight decay 0).

TRL runs fp32 (bf16=False; its default bf16=True is mixed precision), without gradient
checkpointing (TRL's default is on, and transformers 5.24 takes it through the deprecated
`gradient_checkpointing` alias of `activation_checkpointing`; Concord does not checkpoint), no dropout (TRL disables it),
report_to none. A TRL step is timed from the end of one optimizer step to the end of the next
(TrainerCallback.on_step_end), so it includes data loading and collation as a training loop
does; --warmup steps first, then the mean of --steps. The binary reports its own mean seconds
per step; the ratio is TRL's seconds / Concord's (above 1: Concord is faster).

Contract of the Concord side:
  bench_rlhf reward --model DIR --data PAIRS.jsonl --batch-size B --max-length L --steps S
                    --warmup W --threads N --share-prefixes on|off
                    -> one JSON line {"seconds_per_step": x, "steps": S, "tokens_run_per_step": n, ...}
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

transformers.utils.logging.disable_progress_bar()  # keep the output to the table
transformers.utils.logging.set_verbosity_error()
datasets.disable_progress_bars()

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests/fixtures/tokenizers/gpt2/tokenizer.json"
EOS = "<|endoftext|>"
SHAPES = {
    "mini": dict(n_embd=384, n_layer=6, n_head=6, vocab_size=50257),
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257),
    "small-vocab": dict(n_embd=384, n_layer=6, n_head=6, vocab_size=1203),
}
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


def gpt2_config(shape, **extra):
    """A GPT-2 config of the named shape whose special ids are the fixture tokenizer's EOS."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    eos = tok.token_to_id(EOS)
    return transformers.GPT2Config(n_positions=1024, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                   bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                                   **SHAPES[shape], **extra)


def hf_tokenizer(padding_side="right"):
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), eos_token=EOS,
                                               bos_token=EOS, pad_token=EOS)
    tok.padding_side = padding_side
    return tok


def save_model(model, folder):
    model.save_pretrained(folder, safe_serialization=True)
    shutil.copy(TOKENIZER, Path(folder) / "tokenizer.json")


def words_to_length(tok, rng, prefix, n_tokens):
    """`prefix` followed by random words, exactly n_tokens tokens long (tokenized as one string,
    as TRL tokenizes prompt + completion); None if the words cannot land on n_tokens."""
    count = lambda s: len(tok.encode(s).ids)
    text = prefix
    while count(text) < n_tokens:
        nxt = text + " " + rng.choice(WORDS)
        if count(nxt) > n_tokens:
            for w in rng.sample(WORDS, len(WORDS)):
                if count(text + " " + w) == n_tokens:
                    return text + " " + w
            return None
        text = nxt
    return text if count(text) == n_tokens else None


def make_prompts(n, length, seed):
    """n {"prompt": ...} records of seeded random English words, each exactly `length` tokens
    (the PPO and GRPO drivers' prompts)."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    rng = random.Random(seed)
    prompts = []
    for _ in range(1000 * n):
        if len(prompts) == n:
            break
        text = words_to_length(tok, rng, rng.choice(WORDS).capitalize(), length)
        if text is not None:
            prompts.append({"prompt": text})
    if len(prompts) < n:
        sys.exit(f"{Path(sys.argv[0]).name}: could not make prompts of exactly {length} tokens")
    return prompts


def write_policy_folders(tmp, shape, prompts):
    """A random GPT-2 policy (tmp/policy) and reward model (tmp/reward) of `shape`, and `prompts`
    as tmp/prompts.jsonl (the PPO and GRPO drivers' inputs); returns the policy's parameter count
    and the prompts file."""
    policy = transformers.GPT2LMHeadModel(gpt2_config(shape)).float()
    reward = transformers.GPT2ForSequenceClassification(gpt2_config(shape, num_labels=1)).float()
    save_model(policy, tmp / "policy")
    save_model(reward, tmp / "reward")
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return sum(p.numel() for p in policy.parameters()), path


def make_pairs(n, length, seed, prompt_fraction=None):
    """n preference pairs whose prompt + chosen and prompt + rejected are `length` tokens. The
    prompt is 4-12 random words at the default length (about a quarter of the row with the
    template's tokens: the fixture tokenizer splits most words), or the first prompt of random
    words that reaches `prompt_fraction` of the row."""
    tok = Tokenizer.from_file(str(TOKENIZER))
    rng = random.Random(seed)
    pairs = []
    for _ in range(1000 * n):
        if len(pairs) == n:
            break
        if prompt_fraction is None:
            words = [rng.choice(WORDS) for _ in range(rng.randint(max(1, length // 32), max(1, length // 10)))]
        else:
            words = [rng.choice(WORDS)]
            while len(tok.encode(f"Question: {' '.join(words).capitalize()}?\nAnswer:").ids) < prompt_fraction * length:
                words.append(rng.choice(WORDS))
        question = " ".join(words).capitalize()
        prompt = f"Question: {question}?\nAnswer:"
        if len(tok.encode(prompt).ids) >= length - 2:
            continue
        chosen = words_to_length(tok, rng, prompt, length)
        rejected = words_to_length(tok, rng, prompt, length)
        if chosen is None or rejected is None:
            continue
        pairs.append({"prompt": prompt, "chosen": chosen[len(prompt):],
                      "rejected": rejected[len(prompt):], "user": str(len(pairs) % 2)})
    if len(pairs) < n:
        sys.exit(f"bench_reward_step.py: could not make rows of exactly {length} tokens; try a longer --max-length")
    return pairs


class LastLog(transformers.TrainerCallback):
    """The last metrics a trainer logged (with `key` given: the last log that holds it, not the
    end-of-training summary)."""

    def __init__(self, key=None):
        self.key, self.logs = key, {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and (self.key is None or self.key in logs):
            self.logs = dict(logs)


class StepClock(transformers.TrainerCallback):
    """perf_counter at the start of training and at the end of every optimizer step."""

    def __init__(self):
        self.begin, self.ends = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())

    def seconds_per_step(self, warmup):
        marks = [self.begin] + self.ends
        timed = [b - a for a, b in zip(marks[warmup:], marks[warmup + 1:])]
        return sum(timed) / len(timed), timed


def run_concord(binary, args_list):
    """Runs the binary; its last stdout line is JSON."""
    out = subprocess.run([str(binary)] + [str(a) for a in args_list], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} {args_list[0]} failed (status {out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def concord_binary(path):
    binary = Path(path)
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    print(f"note: {path} is not an executable file (build target bench_rlhf); timing TRL alone, "
          f"no ratio", file=sys.stderr)
    return None


def trl_reward_steps(model_dir, pairs, args, out_dir):
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    data = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    config = RewardConfig(
        output_dir=str(out_dir), per_device_train_batch_size=args.batch_size, max_length=args.max_length,
        max_steps=args.warmup + args.steps, bf16=False, activation_checkpointing=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, seed=args.seed)
    clock = StepClock()
    trainer = RewardTrainer(model=model, args=config, train_dataset=data, processing_class=hf_tokenizer(),
                            callbacks=[clock])
    trainer.remove_callback(transformers.PrinterCallback)  # its end-of-training dict is not the table
    kept = len(trainer.train_dataset)
    assert kept == len(pairs), f"TRL kept {kept} of {len(pairs)} pairs (max_length filter)"
    trainer.train()
    assert not trainer.model.is_activation_checkpointing
    return clock.seconds_per_step(args.warmup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "build/benchmarks/bench_rlhf"), help="the bench_rlhf binary")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    ap.add_argument("--batch-size", type=int, default=4, help="preference pairs per step (2x rows)")
    ap.add_argument("--max-length", type=int, default=128, help="tokens per row, EOS included")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-fraction", type=float,
                    help="the prompt's share of each row (default: 4-12 words, about 0.12 at length 128)")
    ap.add_argument("--share-prefixes", choices=("on", "off"), default="on",
                    help="Concord runs each pair's common prefix once (on: its default)")
    ap.add_argument("--json-out", help="also write the result JSON here")
    args = ap.parse_args()
    if args.warmup < 1:
        sys.exit("bench_reward_step.py: --warmup must be at least 1 (the first step pays one-time costs)")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    binary = concord_binary(args.bin)
    total = args.warmup + args.steps
    if args.prompt_fraction is not None and not 0 < args.prompt_fraction < 1:
        sys.exit("bench_reward_step.py: --prompt-fraction must be in (0, 1)")
    pairs = make_pairs(args.batch_size * total, args.max_length - 1, args.seed, args.prompt_fraction)
    tok = Tokenizer.from_file(str(TOKENIZER))
    prompt_share = statistics.mean(len(tok.encode(p["prompt"]).ids) for p in pairs) / args.max_length
    model = transformers.GPT2ForSequenceClassification(gpt2_config(args.shape, num_labels=1)).float()
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_model(model, tmp / "reward")
        data = tmp / "pairs.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
        ours = None
        if binary is not None:
            ours = run_concord(binary, [
                "reward", "--model", tmp / "reward", "--data", data, "--batch-size", args.batch_size,
                "--max-length", args.max_length, "--steps", args.steps, "--warmup", args.warmup,
                "--threads", args.threads, "--share-prefixes", args.share_prefixes])
        trl_s, trl_steps = trl_reward_steps(tmp / "reward", pairs, args, tmp / "trl")

    import trl
    tokens = 2 * args.batch_size * args.max_length
    print(f"model: random GPT2ForSequenceClassification '{args.shape}' {SHAPES[args.shape]}, "
          f"{params / 1e6:.1f}M parameters, fp32; batch {args.batch_size} pairs = {2 * args.batch_size} "
          f"rows x {args.max_length} tokens; {args.threads} threads each; {args.warmup} warm-up + "
          f"{args.steps} timed steps; prompts {100 * prompt_share:.0f}% of the tokens")
    print(f"  {'trl ' + trl.__version__ + ' RewardTrainer (torch ' + torch.__version__ + ')':44s} "
          f"{trl_s:8.3f} s/step {tokens / trl_s:9.1f} tok/s  (steps {', '.join(f'{t:.3f}' for t in trl_steps)})")
    result = {"benchmark": "reward_step", "shape": args.shape, "parameters": params,
              "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps,
              "warmup": args.warmup, "threads": args.threads, "prompt_share": prompt_share,
              "trl": {"version": trl.__version__, "seconds_per_step": trl_s, "step_seconds": trl_steps,
                      "median_step_seconds": statistics.median(trl_steps)}}
    if ours is not None:
        c_s = ours["seconds_per_step"]
        run = ours["tokens_run_per_step"]
        print(f"  {'concord bench_rlhf reward':44s} {c_s:8.3f} s/step {tokens / c_s:9.1f} tok/s   "
              f"ratio {trl_s / c_s:.2f}x  (prefixes shared: {ours['share_prefixes']}; "
              f"{run} of {tokens} tokens run)")
        result["concord"] = ours
        result["ratio_trl_over_concord"] = trl_s / c_s
    else:
        result["concord"] = None
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
