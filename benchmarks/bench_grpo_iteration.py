#!/usr/bin/env python3
"""One GRPO iteration: Concord's rlhf GRPO trainer (`bench_rlhf grpo`) with each prompt's columns
run once for its G responses (generation.share_prompts on, the default) and with every row run
whole (off), and TRL's GRPOTrainer (the peer: trl 1.12.0 on transformers 5.24, PyTorch eager,
CPU); same policy and reward folders, same prompts, same batch, G, response length and minibatch
size, same run, same thread count.

  ~/.cache/concord/venv/bin/python benchmarks/bench_grpo_iteration.py \\
      --bin build/benchmarks/bench_rlhf [--shape small-vocab|mini|gpt2] [--batch-size 4] \\
      [--generations 8] [--prompt-length 96] [--response-length 32] [--mini-batch-size 16] \\
      [--iterations 2] [--warmup 1] [--threads 2] [--no-trl] [--json-out FILE]

(trl comes with `scripts/python-env.sh --bench`.) Without the binary the script times TRL alone.

Models: random weights, built and saved as bench_reward_step.py does (fixed seeds, nothing
downloaded); the default shape is `small-vocab` (6 layers, d 384, the fixture tokenizer's 1203
ids) because TRL's GRPOTrainer decodes each completion to text and tokenizes it again for the
reward model, and ids outside the tokenizer's vocabulary would not survive that. The policy is a
GPT2LMHeadModel, the reference a copy of it, the reward model a GPT2ForSequenceClassification.

Prompts: seeded random English words, each exactly --prompt-length tokens. An iteration: G
responses of exactly --response-length tokens for each of --batch-size prompts (temperature 0.7,
top_k 0, top_p 1; Concord without a stop token, TRL with min_new_tokens = max_new_tokens), the
reference's log-probs (beta 0.04 on both sides; TRL's default beta is 0, no reference), the reward
model's scores, group-relative advantages, then B G / M optimizer steps of M responses (loss_type
grpo, epsilon 0.2, lr 1e-6 linear, clipping at norm 1, fp32, one pass: num_iterations 1).

Work that differs by design, in the ratio: TRL computes the policy's log-probs once more before the
updates (its old log-probs, when steps_per_generation > 1), where Concord keeps those of sampling;
TRL's reward model reads re-tokenized text; Concord (share on) runs each prompt's columns once per
pass for the rows that repeat it, TRL and Concord (share off) run every row whole.

Timing: Concord's binary reports its mean seconds per iteration. TRL: an iteration is
steps_per_generation = B G / M optimizer steps, the first of which generates and scores; the time
from the end of the last step before it to the end of its last step (TrainerCallback.on_step_end);
--warmup iterations first, then the mean of --iterations.
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

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def trl_grpo_iterations(policy_dir, reward_dir, prompts, args, out_dir):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    load = dict(dtype=torch.float32)
    policy = transformers.AutoModelForCausalLM.from_pretrained(policy_dir, **load)
    reward = transformers.AutoModelForSequenceClassification.from_pretrained(reward_dir, **load)
    tok = hf_tokenizer(padding_side="left")
    assert all(len(tok(p["prompt"])["input_ids"]) == args.prompt_length for p in prompts)
    rows = args.batch_size * args.generations
    steps_per_generation = rows // args.mini_batch_size
    total = args.warmup + args.iterations
    config = GRPOConfig(
        output_dir=str(out_dir), per_device_train_batch_size=args.mini_batch_size, gradient_accumulation_steps=1,
        steps_per_generation=steps_per_generation, num_generations=args.generations,
        max_completion_length=args.response_length, generation_kwargs={"min_new_tokens": args.response_length},
        temperature=0.7, top_k=0, top_p=1.0, beta=0.04, epsilon=0.2, num_iterations=1, loss_type="grpo",
        scale_rewards="group", learning_rate=1e-6, lr_scheduler_type="linear", weight_decay=0.0, max_grad_norm=1.0,
        max_steps=total * steps_per_generation, shuffle_dataset=False, disable_dropout=True, bf16=False,
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=1,
        disable_tqdm=True, seed=args.seed)
    clock, last = StepClock(), LastLog("completions/mean_length")
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=config,
                          train_dataset=Dataset.from_list(prompts), processing_class=tok,
                          reward_processing_classes=hf_tokenizer(padding_side="right"), callbacks=[clock, last])
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    ends = clock.ends
    assert len(ends) == total * steps_per_generation, f"TRL ran {len(ends)} steps"
    starts = [clock.begin] + ends
    iters = [ends[(i + 1) * steps_per_generation - 1] - starts[i * steps_per_generation] for i in range(total)]
    timed = iters[args.warmup:]
    length = last.logs.get("completions/mean_length")
    assert length == args.response_length, f"TRL's completions are {length} tokens, not {args.response_length}"
    return statistics.mean(timed), timed, last.logs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parents[1] / "build/benchmarks/bench_rlhf"),
                    help="the bench_rlhf binary")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="small-vocab")
    ap.add_argument("--batch-size", type=int, default=4, help="prompts per iteration")
    ap.add_argument("--generations", type=int, default=8, help="G: responses per prompt")
    ap.add_argument("--prompt-length", type=int, default=96, help="tokens per prompt")
    ap.add_argument("--response-length", type=int, default=32, help="sampled tokens per response")
    ap.add_argument("--mini-batch-size", type=int, default=16, help="responses per optimizer step")
    ap.add_argument("--iterations", type=int, default=2, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations first (at least 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-trl", action="store_true", help="time Concord's two settings only")
    ap.add_argument("--json-out", help="also write the result JSON here")
    args = ap.parse_args()
    if args.warmup < 1:
        sys.exit("bench_grpo_iteration.py: --warmup must be at least 1 (the first iteration pays one-time costs)")
    if (args.batch_size * args.generations) % args.mini_batch_size:
        sys.exit("bench_grpo_iteration.py: --mini-batch-size must divide --batch-size x --generations")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    binary = concord_binary(args.bin)
    total = args.warmup + args.iterations
    prompts = make_prompts(args.batch_size * total, args.prompt_length, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        params, prompts_path = write_policy_folders(tmp, args.shape, prompts)
        result = {"benchmark": "grpo_iteration", "shape": args.shape, "policy_parameters": params,
                  "batch_size": args.batch_size, "generations": args.generations,
                  "prompt_length": args.prompt_length, "response_length": args.response_length,
                  "mini_batch_size": args.mini_batch_size, "iterations": args.iterations,
                  "warmup": args.warmup, "threads": args.threads}
        print(f"models: random GPT-2 '{args.shape}' {SHAPES[args.shape]} policy ({params / 1e6:.1f}M "
              f"parameters), reference and reward model of the same shape, fp32; {args.batch_size} prompts x "
              f"{args.prompt_length} tokens, {args.generations} responses of {args.response_length} tokens each; "
              f"minibatches of {args.mini_batch_size}; {args.threads} threads each; {args.warmup} warm-up + "
              f"{args.iterations} timed iterations")
        concord = {}
        if binary is not None:
            for share in ("on", "off"):
                concord[share] = run_concord(binary, [
                    "grpo", "--policy", tmp / "policy", "--reward", tmp / "reward", "--prompts", prompts_path,
                    "--batch-size", args.batch_size, "--generations", args.generations,
                    "--response-length", args.response_length, "--mini-batch-size", args.mini_batch_size,
                    "--iterations", args.iterations, "--warmup", args.warmup, "--threads", args.threads,
                    "--share-prompts", share])
        if not args.no_trl:
            trl_s, trl_iters, trl_metrics = trl_grpo_iterations(tmp / "policy", tmp / "reward", prompts, args,
                                                                tmp / "trl")
            import trl
            result["trl"] = {"version": trl.__version__, "seconds_per_iteration": trl_s, "iteration_seconds": trl_iters,
                             "last_metrics": trl_metrics}
            print(f"  {'trl ' + trl.__version__ + ' GRPOTrainer (torch ' + torch.__version__ + ')':44s} "
                  f"{trl_s:8.3f} s/iteration  (iterations {', '.join(f'{t:.3f}' for t in trl_iters)})")
    for share, out in concord.items():
        s = out["seconds_per_iteration"]
        line = f"  {'concord bench_rlhf grpo, share-prompts ' + share:44s} {s:8.3f} s/iteration"
        if "trl" in result:
            line += f"   TRL / this {result['trl']['seconds_per_iteration'] / s:.2f}x"
        print(line + f"  (iterations {', '.join(f'{t:.3f}' for t in out['iteration_seconds'])})")
    result["concord"] = concord or None
    if len(concord) == 2:
        ratio = concord["off"]["seconds_per_iteration"] / concord["on"]["seconds_per_iteration"]
        result["ratio_share_off_over_on"] = ratio
        print(f"  sharing the prompts: {ratio:.2f}x (share off / share on)")
        if "trl" in result:
            result["ratio_trl_over_concord"] = result["trl"]["seconds_per_iteration"] / concord["on"]["seconds_per_iteration"]
    print(json.dumps(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
