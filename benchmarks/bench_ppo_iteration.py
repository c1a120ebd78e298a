#!/usr/bin/env python3
"""One PPO iteration: Concord's rlhf PPO trainer (`bench_rlhf ppo`) vs TRL's PPOTrainer (the
baseline: trl 1.12.0's trl.experimental.ppo on transformers 5.24, PyTorch eager, CPU), same policy
and reward folders, same prompts, same batch size, response length, epochs and minibatches, same
run, same thread count.

  ~/.cache/concord/venv/bin/python benchmarks/bench_ppo_iteration.py \\
      --bin build/benchmarks/bench_rlhf [--shape mini|gpt2|small-vocab] [--batch-size 8] \\
      [--prompt-length 32] [--response-length 32] [--ppo-epochs 2] [--minibatches 2] \\
      [--iterations 2] [--warmup 1] [--threads 2] [--json-out FILE]

(trl comes with `scripts/python-env.sh --bench`.) Without the binary the script times TRL alone
and says so.

Models: random weights (transformers' own init), built here from configs with fixed seeds --
nothing is downloaded -- and saved with save_pretrained to temp folders with
tests/fixtures/tokenizers/gpt2/tokenizer.json copied in: the policy a GPT2LMHeadModel, the reward
model a GPT2ForSequenceClassification (num_labels 1) of the same shape (see bench_reward_step.py
for the shapes; `mini`, the default, is 6 layers, d 384, 6 heads, vocab 50257). The value model is
loaded from the reward folder (as TRL's PPO example does), the reference policy is a copy of the
policy. Token id 0 (<|endoftext|>) is bos, eos and pad. The tokenizer knows 1203 of the 50257 ids:
sampled ids above that are never decoded here, so it does not matter.

Prompts: PROMPTS.jsonl, one {"prompt": ...} a line, seeded random English words, each exactly
--prompt-length tokens, so no prompt is padded. One iteration (TRL's PPOTrainer.train, one
`update`): sample --response-length tokens for each of --batch-size prompts (temperature 0.7, top_k
0, top_p 1; no stop token, so every response is exactly --response-length tokens), one no-grad
forward each of the reference policy, the value model and the reward model over prompt + response,
reward forming (score at the last token, -kl_coef * KL per token), GAE and whitening, then
--ppo-epochs passes over the batch in --minibatches minibatches, each a forward and backward of
policy and value model and one AdamW step (TRL's defaults: lr 3e-6, kl_coef 0.05, k1 KL,
cliprange 0.2, vf_coef 0.1, gamma 1, lam 0.95). TRL's defaults differ in two places kept here
explicit: num_ppo_epochs 4 (here --ppo-epochs 2 by default, to keep the run short) and
num_mini_batches 1.

A design difference the ratio includes: TRL 1.12's PPOTrainer trains that separate value model (a
second backbone, forward in the rollout, forward and backward in every minibatch), while Concord's
PolicyWithValue puts the value head on the policy's backbone (the layout of TRL's older
AutoModelForCausalLMWithValueHead), and TRL runs the LM head over the prompt columns too; at the
`mini` shape Concord's update does about half TRL's arithmetic. Sampling is the same work.

TRL runs fp32 (bf16=False), without activation checkpointing, no dropout (TRL disables it),
report_to none, no sample generations (num_sample_generations 0). An iteration is timed from the
end of one update to the end of the next (TrainerCallback.on_step_end, which PPOTrainer calls once
per update after its metrics and learning-rate step); --warmup iterations first, then the mean of
--iterations. The binary reports its own mean seconds per iteration; the ratio is TRL's seconds /
Concord's (above 1: Concord is faster).

Contract of the Concord side:
  bench_rlhf ppo --policy DIR --reward DIR --prompts PROMPTS.jsonl --batch-size B
                 --response-length R --ppo-epochs E --minibatches M --iterations I --warmup W
                 --threads N      -> one JSON line {"seconds_per_iteration": x, "iterations": I}
"""
import argparse
import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

from bench_reward_step import (SHAPES, LastLog, StepClock, concord_binary, hf_tokenizer, make_prompts,
                               run_concord, write_policy_folders)

import torch  # noqa: E402
import transformers  # noqa: E402

# PPOTrainer reads `is_gradient_checkpointing`, which transformers 5.24 deprecates on every call.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def trl_ppo_iterations(policy_dir, reward_dir, prompts, args, out_dir):
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = hf_tokenizer(padding_side="left")
    load = dict(dtype=torch.float32)
    policy = transformers.AutoModelForCausalLM.from_pretrained(policy_dir, **load)
    reward = transformers.AutoModelForSequenceClassification.from_pretrained(reward_dir, **load)
    value = transformers.AutoModelForSequenceClassification.from_pretrained(reward_dir, **load)
    ids = [tok(p["prompt"])["input_ids"] for p in prompts]
    assert all(len(i) == args.prompt_length for i in ids)
    data = Dataset.from_dict({"input_ids": ids})
    total = args.warmup + args.iterations
    config = PPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=1,
        num_mini_batches=args.minibatches, num_ppo_epochs=args.ppo_epochs, response_length=args.response_length,
        total_episodes=args.batch_size * total, local_rollout_forward_batch_size=args.batch_size,
        num_sample_generations=0, stop_token=None, bf16=False, activation_checkpointing=False, use_cpu=True,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=args.seed)
    clock, last = StepClock(), LastLog()
    trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=None, reward_model=reward,
                         value_model=value, train_dataset=data, eval_dataset=data, callbacks=[clock, last])
    trainer.remove_callback(transformers.PrinterCallback)  # its per-update dicts are not the table
    assert not policy.is_activation_checkpointing
    trainer.train()
    assert len(clock.ends) == total, f"TRL ran {len(clock.ends)} updates, expected {total}"
    return clock.seconds_per_step(args.warmup) + (last.logs,)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parents[1] / "build/benchmarks/bench_rlhf"),
                    help="the bench_rlhf binary")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="mini")
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per iteration")
    ap.add_argument("--prompt-length", type=int, default=32, help="tokens per prompt")
    ap.add_argument("--response-length", type=int, default=32, help="sampled tokens per prompt")
    ap.add_argument("--ppo-epochs", type=int, default=2)
    ap.add_argument("--minibatches", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first (at least 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", help="also write the result JSON here")
    args = ap.parse_args()
    if args.warmup < 1:
        sys.exit("bench_ppo_iteration.py: --warmup must be at least 1 (the first iteration pays one-time costs)")
    if args.batch_size % args.minibatches:
        sys.exit("bench_ppo_iteration.py: --batch-size must be a multiple of --minibatches")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    binary = concord_binary(args.bin)
    total = args.warmup + args.iterations
    prompts = make_prompts(args.batch_size * total, args.prompt_length, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params, prompts_path = write_policy_folders(tmp, args.shape, prompts)
        ours = None
        if binary is not None:
            ours = run_concord(binary, [
                "ppo", "--policy", tmp / "policy", "--reward", tmp / "reward", "--prompts", prompts_path,
                "--batch-size", args.batch_size, "--response-length", args.response_length,
                "--ppo-epochs", args.ppo_epochs, "--minibatches", args.minibatches,
                "--iterations", args.iterations, "--warmup", args.warmup, "--threads", args.threads])
        trl_s, trl_iters, trl_metrics = trl_ppo_iterations(tmp / "policy", tmp / "reward", prompts, args, tmp / "trl")

    import trl
    print(f"models: random GPT-2 '{args.shape}' {SHAPES[args.shape]} policy ({params / 1e6:.1f}M parameters), "
          f"reference, value and reward models of the same shape, fp32; {args.batch_size} prompts x "
          f"{args.prompt_length} tokens, {args.response_length} sampled; {args.ppo_epochs} PPO epochs x "
          f"{args.minibatches} minibatches; {args.threads} threads each; {args.warmup} warm-up + "
          f"{args.iterations} timed iterations")
    print(f"  {'trl ' + trl.__version__ + ' PPOTrainer (torch ' + torch.__version__ + ')':44s} "
          f"{trl_s:8.3f} s/iteration  (iterations {', '.join(f'{t:.3f}' for t in trl_iters)})")
    result = {"benchmark": "ppo_iteration", "shape": args.shape, "policy_parameters": params,
              "batch_size": args.batch_size, "prompt_length": args.prompt_length,
              "response_length": args.response_length, "ppo_epochs": args.ppo_epochs,
              "minibatches": args.minibatches, "iterations": args.iterations, "warmup": args.warmup,
              "threads": args.threads,
              "trl": {"version": trl.__version__, "seconds_per_iteration": trl_s, "iteration_seconds": trl_iters,
                      "median_iteration_seconds": statistics.median(trl_iters), "last_metrics": trl_metrics}}
    if ours is not None:
        c_s = ours["seconds_per_iteration"]
        print(f"  {'concord bench_rlhf ppo':44s} {c_s:8.3f} s/iteration   ratio {trl_s / c_s:.2f}x")
        print("  note: Concord's value head sits on the policy's backbone; TRL trains a separate value model "
              "(a second backbone), so the update's work differs (see the docstring)")
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
