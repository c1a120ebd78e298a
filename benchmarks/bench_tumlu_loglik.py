#!/usr/bin/env python3
"""TUMLU-mini `loglik`: `concord run` (task tumlu) against lm-evaluation-harness (the baseline,
HF backend) on the same model folder, the same prompts, in the same run, 2 threads each.

  ~/.cache/concord/venv/bin/python benchmarks/bench_tumlu_loglik.py --bin build/bin/concord
      [--languages azerbaijani,kazakh] [--max-items 20] [--layers 4] [--hidden 256]

Steps, all in one invocation:
  1. A random-weight Llama-shaped model (transformers, seeded) with the llama3 tokenizer fixture
     (byte-level BPE, a BOS from its post-processor) is saved to a temporary folder.
  2. `concord run` with task tumlu, protocol loglik on that folder, timed as a subprocess
     (CONCORD_NUM_THREADS=2): model load, data, prompts, scoring, outputs and report.
  3. The prompts Concord saved (record "system" + "input", the trailing space moved into the
     continuation as the protocol does) become lm-eval documents: one generated YAML task per
     language-subject (dataset_path json over a generated JSONL, doc_to_text the prompt field,
     doc_to_choice the item's letters, target_delimiter " "), so both sides score exactly the same
     context and continuations " A", " B", ... The requests lm-eval built are checked against the
     prompts afterwards.
  4. lm_eval.simple_evaluate with HFLM (torch.set_num_threads(2), fp32, CPU, lm-eval's defaults:
     logits cache on) over those tasks, timed: task building + scoring; the model is loaded
     before the clock starts (Concord's time includes its load).
     CPU seconds (user + system, all threads) are recorded beside the wall times: the machine
     may be shared, and the wall clock then measures the contention as much as the work.
  5. Item by item: the letter each side chose (argmax of the log-likelihoods, first on ties, on
     both sides), disagreements, near-ties, and the largest log-likelihood difference.

Prints a summary and, last, one JSON object.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Threads for each side; CONCORD_BENCH_THREADS=1 leaves the other core to other work.
THREADS = int(os.environ.get("CONCORD_BENCH_THREADS", "2"))
# Offline everything before transformers/datasets/lm_eval are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import torch  # noqa: E402

torch.set_num_threads(THREADS)


def make_model(folder: Path, tokenizer_json: Path, layers: int, hidden: int, seed: int):
    """A Llama-shaped random model whose logits are of order 1 (transformers' std-0.02 init gives
    near-uniform logits, where float rounding alone could decide an item)."""
    import transformers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    heads = max(1, hidden // 64)
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=(hidden * 8 // 3 + 63) // 64 * 64,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0,
        bos_token_id=bos, eos_token_id=eos, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1:  # RMSNorm gains
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("embed_tokens.weight"):
                p.copy_(noise)
            else:  # linear maps: gain ~1 (fan-in scaling), so the logits are of order 1
                p.copy_(noise / p.shape[1] ** 0.5)
    model.save_pretrained(folder, safe_serialization=True)
    # The fixture's tokenizer.json as it is (Concord reads it; transformers wraps it).
    shutil.copy(tokenizer_json, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>", "model_max_length": 4096}, indent=2))
    params = sum(p.numel() for p in model.parameters())
    return {"vocab": vocab, "hidden": hidden, "layers": layers, "heads": heads,
            "intermediate": config.intermediate_size, "parameters": params}


def run_concord(binary: str, model: Path, out: Path, tumlu: str, languages, max_items: int):
    config = {"task": "tumlu", "model": str(model), "model_name": "bench", "protocol": "loglik",
              "data_dir": tumlu, "languages": languages, "max_items_per_subject": max_items}
    cfg = out.parent / "concord_tumlu.json"
    cfg.write_text(json.dumps(config, indent=2))
    env = dict(os.environ, CONCORD_NUM_THREADS=str(THREADS))
    cpu0 = cpu_seconds(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([binary, "run", str(cfg), "--out", str(out)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"concord run failed ({proc.returncode})")
    metrics = {}
    metrics_file = out / "metrics.jsonl"
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            if line.strip():
                metrics.update(json.loads(line))
    return seconds, cpu, metrics


def cpu_seconds(who):
    """user + system CPU seconds of this process (or its finished children), all threads."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def concord_items(out: Path):
    """(language, subject file stem) -> records in item order, from the outputs layout."""
    subjects = {}
    for path in sorted(out.glob("*/outputs/loglik/bench/*.json")):
        language = path.parts[len(out.parts)]
        subjects[(language, path.stem)] = json.loads(path.read_text(encoding="utf-8"))
    return subjects


def task_name(language: str, stem: str) -> str:
    safe = "".join(c if c.isalnum() else "_" for c in f"{language}_{stem}")
    return "tumlu_bench_" + safe.lower()


def write_lm_eval_tasks(subjects, folder: Path):
    """One YAML task + JSONL of documents per language-subject; returns task -> prompts."""
    folder.mkdir(parents=True)
    prompts = {}
    for (language, stem), records in subjects.items():
        name = task_name(language, stem)
        assert name not in prompts, f"task name clash: {name}"
        docs = folder / f"{name}.jsonl"
        with docs.open("w", encoding="utf-8") as f:
            for r in records:
                prompt = r["system"] + r["input"]
                # The loglik protocol's prefix: the prompt without its trailing space, which moves
                # into the continuation (" A"); lm-eval's target_delimiter " " does the same.
                assert prompt.endswith(" "), prompt[-20:]
                prompt = prompt[:-1]
                letters = [chr(ord("A") + i) for i in range(len(r["choices"]))]
                f.write(json.dumps({"prompt": prompt, "letters": letters,
                                    "gold": letters.index(r["answer"]), "index": r["index"]},
                                   ensure_ascii=False) + "\n")
        # JSON is valid YAML and needs no escaping thought.
        (folder / f"{name}.yaml").write_text(json.dumps({
            "task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(docs)}},
            "test_split": "test", "output_type": "multiple_choice",
            "doc_to_text": "prompt", "doc_to_choice": "letters", "doc_to_target": "gold",
            "target_delimiter": " ", "num_fewshot": 0,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }, indent=2))
        prompts[name] = [json.loads(line)["prompt"] for line in docs.read_text(encoding="utf-8").splitlines()]
    return prompts


def run_lm_eval(model: Path, task_dir: Path, tasks, batch_size: int):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    lm = HFLM(pretrained=str(model), backend="causal", device="cpu", dtype="float32",
              batch_size=batch_size)
    load_seconds = time.perf_counter() - t0
    # Time spent inside the model's loglikelihood requests (tokenising + forwards).
    scoring = {"seconds": 0.0}
    inner = lm.loglikelihood

    def timed(requests, *args, **kwargs):
        s = time.perf_counter()
        try:
            return inner(requests, *args, **kwargs)
        finally:
            scoring["seconds"] += time.perf_counter() - s

    lm.loglikelihood = timed
    cpu0 = cpu_seconds(resource.RUSAGE_SELF)
    start = time.perf_counter()
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                                      num_fewshot=0, log_samples=True, bootstrap_iters=0,
                                      random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                      fewshot_random_seed=0)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu0
    return seconds, cpu, load_seconds, scoring["seconds"], results


def compare(subjects, prompts, results, near_tie: float):
    items = agree = context_mismatch = ties_concord = ties_lm_eval = 0
    near_ties = []
    max_diff = 0.0
    disagreements = []
    concord_correct = lm_eval_correct = 0
    for (language, stem), records in subjects.items():
        name = task_name(language, stem)
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        assert len(samples) == len(records), (name, len(samples), len(records))
        for r, s, prompt in zip(records, samples, prompts[name]):
            items += 1
            args = [a for a in s["arguments"]]
            # Every request: (the prompt, " " + letter)
            for k, a in enumerate(args):
                ctx, cont = (a["arg_0"], a["arg_1"]) if isinstance(a, dict) else (a[0], a[1])
                if ctx != prompt or cont != " " + chr(ord("A") + k):
                    context_mismatch += 1
                    break
            theirs = [float(x[0]) for x in s["filtered_resps"]]
            ours = [float(x) for x in r["loglik"]]
            max_diff = max(max_diff, max(abs(a - b) for a, b in zip(ours, theirs)))
            pick_ours = ours.index(max(ours))
            pick_theirs = theirs.index(max(theirs))
            ties_concord += ours.count(max(ours)) > 1
            ties_lm_eval += theirs.count(max(theirs)) > 1
            srt = sorted(theirs, reverse=True)
            if len(srt) > 1 and srt[0] - srt[1] < near_tie:
                near_ties.append(f"{language}/{stem}/{r['index']}: gap {srt[0] - srt[1]:.2e}")
            assert chr(ord("A") + pick_ours) == r["output"], "record output is not the argmax"
            gold = ord(r["answer"]) - ord("A")
            concord_correct += pick_ours == gold
            lm_eval_correct += pick_theirs == gold
            if pick_ours == pick_theirs:
                agree += 1
            else:
                disagreements.append(f"{language}/{stem}/{r['index']}: concord {chr(65 + pick_ours)} "
                                     f"{ours}, lm-eval {chr(65 + pick_theirs)} {theirs}")
    return {"items": items, "same_letter": agree, "disagreements": len(disagreements),
            "disagreement_items": disagreements[:20], "requests_not_the_prompt": context_mismatch,
            "exact_ties_concord": ties_concord, "exact_ties_lm_eval": ties_lm_eval,
            "near_ties": len(near_ties), "near_tie_items": near_ties[:20],
            "max_abs_loglik_diff": max_diff,
            "acc_concord": concord_correct / max(items, 1), "acc_lm_eval": lm_eval_correct / max(items, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="the concord CLI (build/bin/concord)")
    ap.add_argument("--tumlu", default=os.environ.get("CONCORD_TUMLU_DIR", str(ROOT.parent / "shared/data/tumlu-mini")))
    ap.add_argument("--tokenizer", default=str(ROOT / "tests/fixtures/tokenizers/llama3/tokenizer.json"))
    ap.add_argument("--languages", default="", help="comma-separated folders (default: all)")
    ap.add_argument("--max-items", type=int, default=0, help="test items per subject (0: all)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--lm-eval-batch-size", type=int, default=1)
    ap.add_argument("--near-tie", type=float, default=1e-4,
                    help="report items whose two best log-likelihoods differ by less than this")
    ap.add_argument("--keep", default="", help="keep the work folder here instead of a temp one")
    args = ap.parse_args()
    languages = [x for x in args.languages.split(",") if x]

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_tumlu_"))
    if args.keep:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets"))
    try:
        model_dir = work / "model"
        model_dir.mkdir()
        model = make_model(model_dir, Path(args.tokenizer), args.layers, args.hidden, args.seed)
        print(f"model: Llama-shaped, {model['layers']} layers, d {model['hidden']}, "
              f"{model['heads']} heads, ffn {model['intermediate']}, vocab {model['vocab']}, "
              f"{model['parameters']:,} parameters (random, seed {args.seed}); {THREADS} threads each",
              flush=True)

        concord_seconds, concord_cpu, metrics = run_concord(args.bin, model_dir, work / "concord", args.tumlu,
                                               languages, args.max_items)
        subjects = concord_items(work / "concord")
        n_items = sum(len(v) for v in subjects.values())
        print(f"concord run: {concord_seconds:.1f} s ({concord_cpu:.1f} CPU s) for {n_items} items in {len(subjects)} "
              f"subject files (prefix cache hits {metrics.get('tumlu/prefix_cache_hits')}, builds "
              f"{metrics.get('tumlu/prefix_cache_builds')}, full forwards "
              f"{metrics.get('tumlu/full_forwards')})", flush=True)

        prompts = write_lm_eval_tasks(subjects, work / "lm_eval_tasks")
        lm_seconds, lm_cpu, lm_load, lm_scoring, results = run_lm_eval(
            model_dir, work / "lm_eval_tasks", prompts.keys(), args.lm_eval_batch_size)
        print(f"lm-eval: {lm_seconds:.1f} s ({lm_cpu:.1f} CPU s; tasks + scoring; of which loglikelihood {lm_scoring:.1f} s), "
              f"model load {lm_load:.1f} s before the clock, batch size {args.lm_eval_batch_size}", flush=True)

        cmp = compare(subjects, prompts, results, args.near_tie)
        ratio = lm_seconds / concord_seconds
        print(f"ratio lm-eval / concord (wall): {ratio:.2f}x; lm-eval loglikelihood alone / concord "
              f"whole run: {lm_scoring / concord_seconds:.2f}x; CPU seconds: {lm_cpu / concord_cpu:.2f}x")
        print(f"items: {cmp['items']}, same letter: {cmp['same_letter']}, disagreements: "
              f"{cmp['disagreements']}, requests that were not Concord's prompt: "
              f"{cmp['requests_not_the_prompt']}")
        print(f"accuracy concord {100 * cmp['acc_concord']:.2f}%, lm-eval {100 * cmp['acc_lm_eval']:.2f}%; "
              f"exact ties concord {cmp['exact_ties_concord']}, lm-eval {cmp['exact_ties_lm_eval']}; "
              f"items with the best two within {args.near_tie:g}: {cmp['near_ties']}; "
              f"max |loglik difference| {cmp['max_abs_loglik_diff']:.2e}")
        for line in cmp["disagreement_items"]:
            print("  disagreement", line)
        import lm_eval
        import transformers
        print(json.dumps({"model": model, "languages": languages or "all", "max_items": args.max_items,
                          "concord_seconds": concord_seconds, "lm_eval_seconds": lm_seconds,
                          "concord_cpu_seconds": concord_cpu, "lm_eval_cpu_seconds": lm_cpu,
                          "lm_eval_loglikelihood_seconds": lm_scoring, "lm_eval_load_seconds": lm_load,
                          "lm_eval_batch_size": args.lm_eval_batch_size, "ratio": ratio,
                          "concord_metrics": metrics, "lm_eval": lm_eval.__version__,
                          "transformers": transformers.__version__, "torch": torch.__version__,
                          **{k: v for k, v in cmp.items() if not k.endswith("_items")}}))
        ok = cmp["disagreements"] == 0 and cmp["requests_not_the_prompt"] == 0
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
