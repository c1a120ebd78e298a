#!/usr/bin/env python3
"""Data and evaluation for the GPT-2 + IMDb recipe of docs/maxmin.md (MaxMin-RLHF's small-scale
study): two groups of users who want different things from a review's continuation.

  majority  prefers positive sentiment: P(positive) under a sentiment classifier
            (default lvwerra/distilbert-imdb, the classifier of TRL's gpt2-sentiment example)
  minority  prefers concise responses: fewer tokens

The paper's exact labelling, group sizes and pair counts are not public (docs/maxmin.md says what
is and is not verified); the defaults here mirror Concord's miniature (20 : 2 users).

Subcommands (each writes the JSONL a Concord task reads):

  sft-data  IMDb train reviews -> {"prompt": first 2-8 words, "completion": the next words}
  prompts   IMDb reviews -> {"prompt"} records for the ppo task
  pairs     two samples per prompt from the SFT policy, each pair labelled by one synthetic
            user on the true reward of the user's group -> {"prompt","chosen","rejected",
            "user","group"}, shuffled (the reward task holds out the file's last pairs)
  evaluate  policies against the SFT policy on held-out prompts: per group, the share of
            prompts where the policy's response has the higher true reward (ties half)

Prompts are rendered as Concord's "plain" chat template renders them ("Question: {prompt}
\\nAnswer:" and the response after a space), so sampled pairs, reward models and policies all
see one format. Run in the environment of `scripts/python-env.sh --bench` (transformers,
datasets); `--reviews FILE` reads {"text"} JSONL instead of downloading stanfordnlp/imdb.
"""
import argparse
import json
import random
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, PreTrainedTokenizerFast)


def reviews(args, split):
    if args.reviews:
        lines = Path(args.reviews).read_text(encoding="utf-8").splitlines()
        texts = [json.loads(line)["text"] for line in lines if line.strip()]
    else:
        import datasets
        texts = datasets.load_dataset("stanfordnlp/imdb", split=split)["text"]
    return [" ".join(t.replace("<br />", " ").split()) for t in texts]


def prefixes(texts, n, seed, completion_words=0):
    """(prompt, completion) of up to n reviews: the first 2-8 words, then the next words."""
    rng = random.Random(seed)
    order = list(range(len(texts)))
    rng.shuffle(order)
    out = []
    for i in order:
        words = texts[i].split()
        k = rng.randint(2, 8)
        if len(words) <= k:
            continue
        out.append((" ".join(words[:k]), " ".join(words[k:k + completion_words])))
        if len(out) == n:
            break
    return out


def write_jsonl(path, records):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{path}: {len(records)} records")


def render(prompt):
    return f"Question: {prompt}\nAnswer:"  # Concord's "plain" template (src/data/chat_template.cpp)


class Policy:
    """A causal LM folder as Concord writes it (config.json, model.safetensors, tokenizer.json)."""

    def __init__(self, folder, device):
        self.model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
        self.tok = PreTrainedTokenizerFast(tokenizer_file=str(Path(folder) / "tokenizer.json"))
        self.eos = self.model.config.eos_token_id
        self.tok.padding_side = "left"
        self.device = device

    @torch.no_grad()
    def sample(self, prompts, per_prompt, max_new_tokens, seed, batch=32):
        """per_prompt responses of each prompt: (text, tokens before the stop token)."""
        torch.manual_seed(seed)
        out = []
        for start in range(0, len(prompts), batch):
            ids = [self.tok(render(p)).input_ids for p in prompts[start:start + batch]]
            width = max(map(len, ids))
            x = torch.tensor([[self.eos] * (width - len(r)) + r for r in ids], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids],
                                device=self.device)
            y = self.model.generate(input_ids=x, attention_mask=mask, do_sample=True, top_k=0,
                                    top_p=1.0, max_new_tokens=max_new_tokens,
                                    num_return_sequences=per_prompt, pad_token_id=self.eos,
                                    eos_token_id=self.eos)
            for row in y[:, width:].tolist():
                tokens = row[:row.index(self.eos)] if self.eos in row else row
                out.append((self.tok.decode(tokens).strip(), len(tokens)))
        return out


class Sentiment:
    def __init__(self, name, device):
        self.tok = AutoTokenizer.from_pretrained(name)
        self.model = AutoModelForSequenceClassification.from_pretrained(name).to(device).eval()
        labels = {int(k): v.upper() for k, v in self.model.config.id2label.items()}
        self.positive = next((k for k, v in labels.items() if v.startswith("POS")), 1)
        self.device = device

    @torch.no_grad()
    def positive_probability(self, texts, batch=64):
        out = []
        for start in range(0, len(texts), batch):
            x = self.tok(texts[start:start + batch], return_tensors="pt", padding=True,
                         truncation=True, max_length=512).to(self.device)
            out += self.model(**x).logits.softmax(-1)[:, self.positive].tolist()
        return out


def true_rewards(group, prompts, responses, sentiment):
    """The group's true reward of each (prompt, response): P(positive) or minus the tokens."""
    if group == "majority":
        return sentiment.positive_probability([f"{p} {t}" for p, (t, _) in zip(prompts, responses)])
    return [-float(n) for _, n in responses]


def cmd_sft_data(args):
    pairs = prefixes(reviews(args, "train"), args.n, args.seed, completion_words=args.words)
    write_jsonl(args.out, [{"prompt": p, "completion": c} for p, c in pairs])


def cmd_prompts(args):
    pairs = prefixes(reviews(args, args.split), args.n, args.seed)
    write_jsonl(args.out, [{"prompt": p} for p, _ in pairs])


def cmd_pairs(args):
    users = [("majority", f"majority_{i:02d}") for i in range(args.majority_users)]
    users += [("minority", f"minority_{i:02d}") for i in range(args.minority_users)]
    # Each user labels pairs on prompts of its own.
    prompts = [p for p, _ in prefixes(reviews(args, "train"), len(users) * args.pairs_per_user,
                                      args.seed + 1)]
    policy = Policy(args.policy, args.device)
    sentiment = Sentiment(args.sentiment, args.device)
    samples = policy.sample(prompts, 2, args.max_new_tokens, args.seed)
    records, skipped = [], 0
    for u, (group, user) in enumerate(users):
        for j in range(u * args.pairs_per_user, (u + 1) * args.pairs_per_user):
            a, b = samples[2 * j], samples[2 * j + 1]
            if not a[0] or not b[0] or a[0] == b[0]:
                skipped += 1  # Concord refuses empty or identical responses
                continue
            ra, rb = true_rewards(group, [prompts[j]] * 2, [a, b], sentiment)
            if ra == rb:
                skipped += 1  # no preference
                continue
            chosen, rejected = (a, b) if ra > rb else (b, a)
            records.append({"prompt": prompts[j], "chosen": chosen[0], "rejected": rejected[0],
                            "user": user, "group": group})
    random.Random(args.seed).shuffle(records)
    print(f"{skipped} pairs skipped (empty, identical or tied)")
    write_jsonl(args.out, records)


def cmd_evaluate(args):
    prompts = [p for p, _ in prefixes(reviews(args, "test"), args.n, args.seed)]
    sentiment = Sentiment(args.sentiment, args.device)
    expanded = [p for p in prompts for _ in range(args.samples)]

    def scores(folder):
        responses = Policy(folder, args.device).sample(prompts, args.samples, args.max_new_tokens,
                                                       args.seed + 99)
        return {g: true_rewards(g, expanded, responses, sentiment) for g in ("majority", "minority")}

    reference = scores(args.reference)
    print("| policy | majority win | majority P(positive) | minority win | minority tokens |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for spec in args.policy:
        name, folder = spec.split("=", 1) if "=" in spec else (Path(spec).parent.name, spec)
        s = scores(folder)
        row = [name]
        for g in ("majority", "minority"):
            wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(s[g], reference[g])]
            mean = sum(s[g]) / len(s[g])
            row += [f"{100 * sum(wins) / len(wins):.1f}%", f"{mean if g == 'majority' else -mean:.3f}"]
        print("| " + " | ".join(row) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reviews", help="JSONL of {\"text\"} reviews instead of stanfordnlp/imdb")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sft-data")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=25000)
    s.add_argument("--words", type=int, default=40, help="words of each completion")
    s = sub.add_parser("prompts")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=5000)
    s.add_argument("--split", default="train")
    for name in ("pairs", "evaluate"):
        s = sub.add_parser(name)
        s.add_argument("--sentiment", default="lvwerra/distilbert-imdb")
        s.add_argument("--max-new-tokens", type=int, default=48)
    s = sub.choices["pairs"]
    s.add_argument("--policy", required=True, help="the SFT policy folder")
    s.add_argument("--out", required=True)
    s.add_argument("--majority-users", type=int, default=20)
    s.add_argument("--minority-users", type=int, default=2)
    s.add_argument("--pairs-per-user", type=int, default=50)
    s = sub.choices["evaluate"]
    s.add_argument("--reference", required=True, help="the SFT policy folder")
    s.add_argument("--policy", action="append", required=True, help="NAME=FOLDER (repeatable)")
    s.add_argument("--n", type=int, default=256, help="held-out prompts (IMDb test split)")
    s.add_argument("--samples", type=int, default=4, help="responses per prompt and policy")
    args = ap.parse_args()
    {"sft-data": cmd_sft_data, "prompts": cmd_prompts, "pairs": cmd_pairs,
     "evaluate": cmd_evaluate}[args.command](args)


if __name__ == "__main__":
    main()
