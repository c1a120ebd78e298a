#!/usr/bin/env python3
"""Text to image end to end on the CPU: Concord's SdxlPipeline (bench_sdxl_pipeline) against
diffusers' StableDiffusionXLPipeline on the same folder, prompts and initial noise.

  ~/.cache/concord/venv/bin/python benchmarks/bench_sdxl_pipeline.py \
      --bin build/benchmarks/bench_sdxl_pipeline [--sizes tiny,small] [--rounds 3] [--threads 2]
      [--warmup 1] [--tiny-steps 25] [--tiny-iters 5] [--small-steps 10] [--small-iters 3]
      [--small-image 256] [--guidance 5.0] [--prompt TEXT]... [--negative-prompt TEXT]
      [--profile] [--keep DIR] [--json-out FILE]

Baseline: diffusers 0.42.1 StableDiffusionXLPipeline.from_pretrained(folder) on torch 2.15 with
transformers 5.24's CLIP text models (default attention processor: scaled_dot_product_attention),
fp32, called as pipe(prompt, height, width, num_inference_steps, guidance_scale,
negative_prompt, latents=noise, output_type="pt"): text encoding, the Euler loop with
classifier-free guidance on the doubled batch, VAE decode and (image / 2 + 0.5).clamp(0, 1), the
work Concord's generate(prompts, options, noise, decode=true) does. Without --negative-prompt the
negative branch is zeros on both sides (force_zeros_for_empty_prompt).

Pipelines (both random-weight, SDXL's layout; the tokenizers are the fixture's tiny CLIP BPEs,
914 ids, in SDXL's slow-file layout):
  tiny   tests/fixtures/diffusion/tiny-sdxl-pipeline as it is (U-Net 348k parameters, channels
         [8, 16, 24]; 32 x 32 images, 16 x 16 latents): the pipeline's own overhead, per step
         and per call, with next to no arithmetic.
  small  built here with a fixed seed and saved with save_pretrained to a temp folder: text
         encoders CLIP-shaped at hidden 256 (4 layers, 4 heads, quick_gelu) and 384 (4 layers,
         6 heads, gelu, projection 384); the U-Net of bench_unet.py's parity model (SDXL's
         blocks, channels [128, 256, 512], transformer depths [1, 2, 4], head_dim 64) with
         cross_attention_dim 256 + 384 = 640 and a 384-wide pooled embedding; a 4-level
         AutoencoderKL (channels [64, 128, 128, 256], 2 resnets a block, as SDXL's VAE at a
         quarter of its width; 8 pixels a latent); --small-image pixels square (256: 32 x 32
         latents, the parity model's input). The U-Net dominates. Every parameter is redrawn
         as bench_unet.py does (weights N(0, 1/fan_in), biases N(0, 0.1^2), norm scales
         1 + N(0, 0.1^2)), so activations are of order 1 and differences mean something.

Each of --rounds rounds runs, for each size, Concord's process and then diffusers' (this script
with --worker diffusers), each loading the folder, --warmup untimed calls, then the median of
--iters timed ones; the rounds alternate the two so that a change in the machine's load falls on
both. Phases, the same way on both sides, from the per-step callbacks (on_step /
callback_on_step_end): decode = end of call - last step; denoising = n steps at the mean of
steps 2..n; rest = the call less those two (tokenising, both encoders, the pipeline's set-up:
a difference of large numbers when steps take seconds, so reported in seconds, not as a ratio);
and the text phase timed alone (SdxlTextEncoders::encode / encode_negative; pipe.encode_prompt),
the text-encoding figure. Figures: per round the ratio diffusers / Concord for the call, the
denoising loop, the decode and the text encoding, their medians over rounds; peak RSS
(VmHWM) of each process (the Python side's includes the interpreter with torch, diffusers and
transformers imported, reported too); the max abs difference of the final latents and of the
images. Goal (issue 15): >= 1.5x for the call. With the defaults a run takes about 5.5 minutes on
the quiet 2-core VM (docs/benchmarks.md, "SDXL pipeline").

--profile: after each round's timed processes, one profiled process a side (bench_sdxl_pipeline
--profile; torch.profiler with a range per phase) gives the self time of every ATen operator by
phase, grouped as bench_unet.py groups them; the median over rounds is printed (the profiled
calls are slower: the split, not the sum, is the figure).

Thread settings move CPU figures more than the code does (docs/benchmarks.md, the KOALA
section): both sides get this script's environment; the project's convention on the shared VM is
OMP_WAIT_POLICY=PASSIVE for both.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_unet import categorise, parity_config, peak_rss_bytes, randomise  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "diffusion" / "tiny-sdxl-pipeline"
# Ratios are taken of these; "text" (the call's remainder: text encoding plus the pipeline's
# set-up, a difference of two large numbers for the small pipeline) is reported in seconds only.
PHASES = ("denoising", "decode", "text_alone")
DEFAULT_PROMPT = "a photo of an astronaut riding a horse on mars"


def rss_bytes():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


def build_small(folder, image):
    """The mid-size pipeline, saved with save_pretrained; the fixture's tokenizer folders."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, \
        UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    te_fixture = [json.loads((TINY / sub / "config.json").read_text())
                  for sub in ("text_encoder", "text_encoder_2")]
    common = dict(vocab_size=te_fixture[0]["vocab_size"], bos_token_id=te_fixture[0]["bos_token_id"],
                  eos_token_id=te_fixture[0]["eos_token_id"], max_position_embeddings=77)
    torch.manual_seed(0)
    te1 = CLIPTextModel(CLIPTextConfig(
        **common, hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
        hidden_act="quick_gelu", projection_dim=256, pad_token_id=te_fixture[0]["pad_token_id"]))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(
        **common, hidden_size=384, intermediate_size=1536, num_hidden_layers=4, num_attention_heads=6,
        hidden_act="gelu", projection_dim=384, pad_token_id=te_fixture[1]["pad_token_id"]))
    config, _ = parity_config([128, 256, 512])
    config.update(sample_size=image // 8, cross_attention_dim=256 + 384,
                  projection_class_embeddings_input_dim=384 + 6 * config["addition_time_embed_dim"])
    unet = UNet2DConditionModel(**config)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[64, 128, 128, 256],
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=image,
                        scaling_factor=0.13025, force_upcast=False)
    for seed, m in enumerate((te1, te2, vae, unet)):
        randomise(m, 5000 + seed)
        m.float().eval()
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2,
        tokenizer=CLIPTokenizer.from_pretrained(TINY / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(TINY / "tokenizer_2"), unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(TINY / "scheduler"),
        force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):  # SDXL's hub layout: the slow files as the fixture has them
        shutil.rmtree(folder / sub)
        shutil.copytree(TINY / sub, folder / sub)
    return {name: sum(p.numel() for p in m.parameters())
            for name, m in (("text_encoder", te1), ("text_encoder_2", te2), ("unet", unet), ("vae", vae))}


def pipeline_geometry(folder):
    """(latent channels, vae scale factor, default image size) from the folder's configs."""
    unet = json.loads((Path(folder) / "unet" / "config.json").read_text())
    vae = json.loads((Path(folder) / "vae" / "config.json").read_text())
    f = 2 ** (len(vae["block_out_channels"]) - 1)
    return vae["latent_channels"], f, unet["sample_size"] * f


class PhaseRanges:
    """torch.profiler ranges named by phase, opened and closed from the step callback, so each
    operator's self time can be charged to the phase it ran in."""

    def __init__(self):
        self.current = None

    def enter(self, name):
        import torch
        self.exit()
        self.current = torch.autograd.profiler.record_function("phase::" + name)
        self.current.__enter__()

    def exit(self):
        if self.current is not None:
            self.current.__exit__(None, None, None)
            self.current = None


def phase_profile(prof, divisors):
    """Self CPU time per (phase, operator) from a torch.profiler run with PhaseRanges."""
    out = {}
    for e in prof.events():
        if e.name.startswith("phase::") or e.name.startswith("ProfilerStep"):
            continue
        p = e.cpu_parent
        while p is not None and not p.name.startswith("phase::"):
            p = p.cpu_parent
        if p is None:
            continue
        phase = p.name[len("phase::"):]
        if phase not in divisors:
            continue
        row = out.setdefault(phase, {}).setdefault(e.name, {"ms": 0.0, "calls": 0.0})
        row["ms"] += e.self_cpu_time_total / 1e3 / divisors[phase]
        row["calls"] += 1 / divisors[phase]
    return out


def worker_diffusers(args):
    """--worker diffusers: one process, timed and reported as bench_sdxl_pipeline reports."""
    import torch
    rss_imports = rss_bytes()
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(args.threads)
    rss_imports = max(rss_imports, rss_bytes())
    t0 = time.perf_counter()
    pipe = StableDiffusionXLPipeline.from_pretrained(args.pipeline, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    rss_after_load = rss_bytes()
    noise = load_file(args.noise)["noise"]
    prompts = args.prompt or [DEFAULT_PROMPT]
    cfg = args.guidance > 1.0
    ranges = PhaseRanges() if args.profile else None

    def call():
        stamps = []

        def on_step(_pipe, i, _t, _kwargs):
            stamps.append(time.perf_counter())
            if ranges is not None:
                ranges.enter("decode" if i + 1 == len(_pipe.scheduler.timesteps) else "denoising")
            return {}

        if ranges is not None:
            ranges.enter("first_step")
        start = time.perf_counter()
        image = pipe(prompt=prompts, negative_prompt=args.negative_prompt, height=args.height,
                     width=args.width, num_inference_steps=args.steps, guidance_scale=args.guidance,
                     latents=noise.clone(), output_type="pt", callback_on_step_end=on_step).images
        end = time.perf_counter()
        if ranges is not None:
            ranges.exit()
        return image, start, stamps, end

    last = {}

    def keep_latents(_pipe, _i, _t, kwargs):
        last["latents"] = kwargs["latents"]
        return {}

    def text_once():
        with torch.no_grad():
            pipe.encode_prompt(prompt=prompts, device=torch.device("cpu"), num_images_per_prompt=1,
                               do_classifier_free_guidance=cfg, negative_prompt=args.negative_prompt)

    for _ in range(args.warmup):
        call()

    def timed():
        rows = []
        for _ in range(args.iters):
            _, start, stamps, end = call()
            n = len(stamps)
            step = (stamps[-1] - stamps[0]) / (n - 1) if n > 1 else stamps[0] - start
            dec = end - stamps[-1]
            rows.append({"seconds": end - start, "decode": dec, "denoising": step * n,
                         "text": end - start - step * n - dec, "step": step, "steps": n,
                         "step_seconds": [b - a for a, b in zip([start] + stamps[:-1], stamps)]})
        text_once()
        alone = []
        for _ in range(args.iters):
            if ranges is not None:
                ranges.enter("text")
            t = time.perf_counter()
            text_once()
            alone.append(time.perf_counter() - t)
            if ranges is not None:
                ranges.exit()
        return rows, alone

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            rows, alone = timed()
    else:
        rows, alone = timed()
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    result = {"seconds": med("seconds"), "min_seconds": min(r["seconds"] for r in rows),
              "mean_seconds": statistics.mean(r["seconds"] for r in rows),
              "phases": {"text": med("text"), "denoising": med("denoising"), "decode": med("decode"),
                         "text_alone": statistics.median(alone)},
              "seconds_per_step": med("step"), "steps": rows[-1]["steps"],
              "last_call_step_seconds": rows[-1]["step_seconds"],
              "peak_rss_bytes": peak_rss_bytes(), "rss_after_load_bytes": rss_after_load,
              "rss_after_imports_bytes": rss_imports, "load_seconds": load_s,
              "parameters": {name: sum(p.numel() for p in getattr(pipe, name).parameters())
                             for name in ("text_encoder", "text_encoder_2", "unet", "vae")},
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "attn_processor": type(next(iter(pipe.unet.attn_processors.values()))).__name__}
    if args.profile:
        n = rows[-1]["steps"]
        result["profile_wall_ms"] = {"text": 1e3 * statistics.mean(alone),
                                     "denoising": 1e3 * statistics.mean(r["step"] for r in rows),
                                     "decode": 1e3 * statistics.mean(r["decode"] for r in rows)}
        result["profile"] = phase_profile(prof, {"text": args.iters, "decode": args.iters,
                                                 "denoising": args.iters * max(n - 1, 1)})
    if args.output:
        # The final latents through the callback (output_type="pt" returns only the images).
        image = pipe(prompt=prompts, negative_prompt=args.negative_prompt, height=args.height,
                     width=args.width, num_inference_steps=args.steps, guidance_scale=args.guidance,
                     latents=noise.clone(), output_type="pt", callback_on_step_end=keep_latents,
                     callback_on_step_end_tensor_inputs=["latents"]).images
        save_file({"latents": last["latents"].contiguous(), "images": image.float().contiguous()},
                  args.output)
    print(json.dumps(result))
    return 0


def run_json(cmd, env=None):
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"bench_sdxl_pipeline.py: {' '.join(map(str, cmd))} failed ({run.returncode}):\n"
                 f"{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def group_profile(ours, theirs, walls):
    """Per phase, the operators' self times grouped as bench_unet.py groups them, and the wall
    time outside every ATen operator (Concord's own kernels and module code; Python, diffusers'
    and transformers' modules and the profiler's bookkeeping on the other side)."""
    out = {}
    for phase in ("text", "denoising", "decode"):
        rows = {}
        for side, prof in (("concord", ours), ("diffusers", theirs)):
            for op, v in prof.get(phase, {}).items():
                if "::" not in op:
                    continue
                rows.setdefault(categorise(op), {"concord": 0.0, "diffusers": 0.0})[side] += v["ms"]
        rows["outside ATen operators"] = {
            side: 1e3 * walls[side][phase] - sum(r[side] for r in rows.values())
            for side in ("concord", "diffusers")}
        out[phase] = rows
    return out


def profiled_walls(result):
    return {k: v / 1e3 for k, v in result["profile_wall_ms"].items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="path to the bench_sdxl_pipeline binary")
    ap.add_argument("--sizes", default="tiny,small")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--tiny-steps", type=int, default=25)
    ap.add_argument("--tiny-iters", type=int, default=5)
    ap.add_argument("--small-steps", type=int, default=10)
    ap.add_argument("--small-iters", type=int, default=3)
    ap.add_argument("--small-image", type=int, default=256, help="pixels, square, a multiple of 8")
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--prompt", action="append", help="repeat for a batch (default: one prompt)")
    ap.add_argument("--negative-prompt", help="default: none (zero negative embeddings)")
    ap.add_argument("--seed", type=int, default=0, help="the initial noise's")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--keep", help="build the small pipeline here and keep it (reused if present)")
    ap.add_argument("--json-out", help="write every figure here")
    # Internal: the diffusers side in a process of its own.
    ap.add_argument("--worker", choices=["diffusers"], help=argparse.SUPPRESS)
    ap.add_argument("--pipeline", help=argparse.SUPPRESS)
    ap.add_argument("--noise", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--iters", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--height", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_diffusers(args)
    if not args.bin:
        ap.error("--bin is required")
    sizes = [s for s in args.sizes.split(",") if s]
    if set(sizes) - {"tiny", "small"}:
        ap.error(f"unknown size(s) {sorted(set(sizes) - {'tiny', 'small'})}; valid: tiny, small")
    if args.small_image % 8:
        ap.error("--small-image must be a multiple of 8")
    import torch
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(args.threads)
    prompts = args.prompt or [DEFAULT_PROMPT]
    print(f"bench_sdxl_pipeline.py, {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()}, "
          f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, "
          f"{args.threads} threads", flush=True)
    result = {"prompts": prompts, "negative_prompt": args.negative_prompt, "guidance": args.guidance,
              "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        setups = {}
        for size in sizes:
            if size == "tiny":
                folder, steps, iters, built = TINY, args.tiny_steps, args.tiny_iters, None
            else:
                folder = Path(args.keep) if args.keep else tmp / "small-sdxl-pipeline"
                steps, iters, built = args.small_steps, args.small_iters, None
                if not (folder / "model_index.json").exists():
                    t = time.perf_counter()
                    built = build_small(folder, args.small_image)
                    print(f"built the small pipeline in {folder} ({time.perf_counter() - t:.0f} s): "
                          + ", ".join(f"{k} {v:,}" for k, v in built.items()), flush=True)
            channels, f, default_px = pipeline_geometry(folder)
            px = default_px
            g = torch.Generator().manual_seed(args.seed)
            noise = torch.randn(len(prompts), channels, px // f, px // f, generator=g)
            save_file({"noise": noise}, tmp / f"{size}-noise.safetensors")
            common = ["--noise", str(tmp / f"{size}-noise.safetensors"), "--steps", str(steps),
                      "--guidance", str(args.guidance), "--height", str(px), "--width", str(px),
                      "--warmup", str(args.warmup), "--iters", str(iters), "--threads", str(args.threads)]
            for p in prompts:
                common += ["--prompt", p]
            if args.negative_prompt is not None:
                common += ["--negative-prompt", args.negative_prompt]
            ours = [args.bin, "--pipeline", str(folder), *common,
                    "--output", str(tmp / f"{size}-ours.safetensors")]
            theirs = [sys.executable, __file__, "--worker", "diffusers", "--pipeline", str(folder), *common,
                      "--output", str(tmp / f"{size}-theirs.safetensors")]
            setups[size] = dict(ours=ours, theirs=theirs, steps=steps, iters=iters, image=px)
            result["sizes"][size] = {"folder": str(folder), "steps": steps, "iters": iters, "image": px,
                                     "latent": px // f, "rounds": [], "profiles": []}
        for r in range(args.rounds):
            for size in sizes:
                s, res = setups[size], result["sizes"][size]
                load = os.getloadavg()
                ours = run_json(s["ours"])
                theirs = run_json(s["theirs"])
                ratio = {"call": theirs["seconds"] / ours["seconds"]}
                ratio.update({p: theirs["phases"][p] / ours["phases"][p] for p in PHASES})
                ratio["step"] = theirs["seconds_per_step"] / ours["seconds_per_step"]
                res["rounds"].append({"load_before": load, "concord": ours, "diffusers": theirs, "ratio": ratio})
                print(f"  round {r + 1} {size:5s}: load {load[0]:.2f}  concord {ours['seconds']:.3f} s  "
                      f"diffusers {theirs['seconds']:.3f} s  ratio {ratio['call']:.2f}x  (denoising "
                      f"{ratio['denoising']:.2f}x, decode {ratio['decode']:.2f}x, text alone "
                      f"{ratio['text_alone']:.2f}x; rest of the call {ours['phases']['text']:.3f} vs "
                      f"{theirs['phases']['text']:.3f} s)", flush=True)
                if args.profile:
                    # Profiled in separate processes after the timed ones (the profiler slows both).
                    p_ours = run_json(s["ours"][:-2] + ["--profile"])
                    p_theirs = run_json(s["theirs"][:-2] + ["--profile"])
                    res["profiles"].append({
                        "grouped": group_profile(p_ours["profile"], p_theirs["profile"],
                                                 {"concord": profiled_walls(p_ours),
                                                  "diffusers": profiled_walls(p_theirs)}),
                        "ops": {"concord": p_ours["profile"], "diffusers": p_theirs["profile"]}})
        for size in sizes:
            res = result["sizes"][size]
            a = load_file(tmp / f"{size}-ours.safetensors")
            b = load_file(tmp / f"{size}-theirs.safetensors")
            res["max_abs_diff_latents"] = (a["latents"].double() - b["latents"].double()).abs().max().item()
            res["latents_max_abs"] = b["latents"].abs().max().item()
            res["latents_std"] = b["latents"].std().item()
            res["max_abs_diff_images"] = (a["images"].double() - b["images"].double()).abs().max().item()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    report(result, args)
    return 0


def report(result, args):
    env = os.environ.get("OMP_WAIT_POLICY", "default")
    for size, res in result["sizes"].items():
        rs = res["rounds"]
        if not rs:
            continue
        c, d = rs[-1]["concord"], rs[-1]["diffusers"]
        med = lambda f: statistics.median(f(r) for r in rs)  # noqa: E731
        print(f"\n{size}: {res['image']}x{res['image']} image ({res['latent']}x{res['latent']} latents), "
              f"{res['steps']} steps, guidance {result['guidance']}, {len(result['prompts'])} prompt(s), "
              f"negative {'zeros' if result['negative_prompt'] is None else repr(result['negative_prompt'])}; "
              f"fp32, {c['threads']} threads, OMP_WAIT_POLICY {env}; median of {res['iters']} after "
              f"{args.warmup} warm-up, {len(rs)} rounds")
        print("  parameters: " + ", ".join(f"{k} {v:,}" for k, v in sorted(c["parameters"].items())))
        print(f"  {'':28s} {'call s':>8s} {'rest':>8s} {'denoise':>8s} {'decode':>8s} {'text alone':>10s} "
              f"{'s/step':>8s} {'peak RSS':>9s}")
        for side, key in (("concord (libtorch " + c["libtorch"] + ")", "concord"),
                          ("diffusers (torch " + d["torch"] + ")", "diffusers")):
            print(f"  {side:28s} {med(lambda r: r[key]['seconds']):8.3f} "
                  + " ".join(f"{med(lambda r: r[key]['phases'][p]):8.3f}" for p in ("text", "denoising", "decode"))
                  + f" {med(lambda r: r[key]['phases']['text_alone']):10.4f}"
                  + f" {med(lambda r: r[key]['seconds_per_step']):8.4f}"
                  + f" {rs[-1][key]['peak_rss_bytes'] / 1e9:7.2f} GB")
        print(f"  diffusers / concord: call {med(lambda r: r['ratio']['call']):.2f}x (rounds: "
              + ", ".join(f"{r['ratio']['call']:.2f}x" for r in rs) + "); "
              + ", ".join(f"{p} {med(lambda r: r['ratio'][p]):.2f}x ("
                          + ", ".join(f"{r['ratio'][p]:.2f}" for r in rs) + ")" for p in PHASES))
        print(f"  goal >= 1.5x {'met' if med(lambda r: r['ratio']['call']) >= 1.5 else 'NOT met'}; "
              f"max abs difference: final latents {res['max_abs_diff_latents']:.2e} (latents max abs "
              f"{res['latents_max_abs']:.2f}, std {res['latents_std']:.3f}), images {res['max_abs_diff_images']:.2e}")
        print(f"  memory: concord peak {c['peak_rss_bytes'] / 1e9:.2f} GB (after load "
              f"{c['rss_after_load_bytes'] / 1e9:.2f}); diffusers peak {d['peak_rss_bytes'] / 1e9:.2f} GB "
              f"(after imports {d['rss_after_imports_bytes'] / 1e9:.2f}, after load "
              f"{d['rss_after_load_bytes'] / 1e9:.2f}); load {c['load_seconds']:.2f} vs {d['load_seconds']:.2f} s")
        if res["profiles"]:
            print(f"  where the time goes (self time of ATen operators, ms; text and decode per call, "
                  f"denoising per step; median of {len(res['profiles'])} profiled runs a side):")
            for phase in ("text", "denoising", "decode"):
                cats = {k for p in res["profiles"] for k in p["grouped"][phase]}
                rows = {k: {s: statistics.median(p["grouped"][phase].get(k, {}).get(s, 0.0)
                                                 for p in res["profiles"]) for s in ("concord", "diffusers")}
                        for k in cats}
                tot = {s: sum(v[s] for v in rows.values()) for s in ("concord", "diffusers")}
                print(f"    {phase}: profiled wall concord {tot['concord']:.1f}, diffusers {tot['diffusers']:.1f}")
                for k in sorted(rows, key=lambda k: -max(rows[k].values())):
                    print(f"      {k:30s} concord {rows[k]['concord']:9.2f}   diffusers {rows[k]['diffusers']:9.2f}")
                for side in ("concord", "diffusers"):
                    ops = res["profiles"][-1]["ops"][side].get(phase, {})
                    top = sorted(((v["ms"], k, v["calls"]) for k, v in ops.items() if "::" in k), reverse=True)[:6]
                    print(f"      {side} top: " + ", ".join(f"{k} {ms:.2f} ms ({n:.0f})" for ms, k, n in top))


if __name__ == "__main__":
    sys.exit(main())
