#!/usr/bin/env python3
"""The SDXL / KOALA conditional U-Net's forward pass on the CPU (or a CUDA device): Concord
(bench_unet) against diffusers' UNet2DConditionModel, and the KOALA students against SDXL's U-Net.

  ~/.cache/concord/venv/bin/python benchmarks/bench_unet.py --bin build/benchmarks/bench_unet \
      [--parts parity,students] [--threads 2] [--rounds 3] [--iters 5] [--warmup 1]
      [--parity-channels 128,256,512] [--parity-batch 2] [--parity-latent 32]
      [--students sdxl-unet,koala-1b,koala-700m] [--students-latent 32] [--students-iters 3]
      [--profile] [--concord-variants channels-last,bf16,bf16-channels-last]
      [--diffusers-default-env] [--device cpu|cuda] [--dtype fp32|bf16] [--backward]
      [--json-out FILE]

parity (the baseline: diffusers 0.42.1 on torch 2.15, default attention processor, i.e.
  scaled_dot_product_attention): a mid-size U-Net of SDXL's layout, built by diffusers with a
  fixed seed, every parameter redrawn (weights N(0, 1/fan_in), biases N(0, 0.1^2), norm scales
  1 + N(0, 0.1^2), as scripts/fixtures/make_diffusion_fixtures.py does, so outputs are of order
  1 and the difference means something) and saved once with save_pretrained to a temp folder;
  both sides load that folder and read the same inputs from one safetensors file:
    down DownBlock2D, CrossAttnDownBlock2D x 2 / mid UNetMidBlock2DCrossAttn / up
    CrossAttnUpBlock2D x 2, UpBlock2D; block_out_channels --parity-channels (default
    [128, 256, 512]); heads channels / 64 (head_dim 64, as SDXL's); layers_per_block 2;
    transformer_layers_per_block [1, 2, 4] (SDXL's [1, 2, 10] shortened); cross_attention_dim 256;
    text_time conditioning with addition_time_embed_dim 256 and a 256-wide pooled text embedding;
    latent 32 x 32, batch 2 (a classifier-free-guidance pair), text length 77.
  One forward is 80 GFLOP (44 in the linear layers, 32 in convolutions, 2.6 in attention) and
  takes 0.6-1.0 s on the 2-core VM. Each side runs in a process of its own (this script with
  --worker diffusers; bench_unet), so each peak resident set (VmHWM) is its own: the Python
  side's includes the interpreter, torch and diffusers (0.82 GB before any weight). Each of
  --rounds rounds runs Concord, then diffusers; both take --warmup untimed calls then the
  median of --iters; the figure is the median over rounds of diffusers_seconds /
  concord_seconds (the machine may be shared: alternating evens the load out). Goal: >= 1.5x.
  The max abs difference between the two predictions is printed beside it.

students (Concord only): configs/models/{sdxl-unet,koala-1b,koala-700m}.json, Concord's random
  initialisation, fp32, batch 1, --students-latent (32: a 256 x 256 image), text length 77,
  cross_attention_dim 2048 as the configs say. Each model runs in a process of its own, one at a
  time (SDXL's fp32 weights are 10.3 GB); the figures are its median forward time and its peak
  resident set, and the ratios SDXL / student (KOALA, arXiv 2312.04005: KOALA-700M more than 2x
  faster than SDXL's U-Net).

--profile adds, for the parity model, where each side's time goes: self time of every ATen
operator (bench_unet --profile; torch.profiler for diffusers) grouped into convolution, GEMM,
attention, norms, activations, elementwise and copies, in separate processes after each round's
timed ones, the median over rounds. Profiled calls run slower than timed ones; the split, not
the sum, is the figure. --concord-variants times experiments on Concord's side in each round
(NHWC weights and latents; bf16 weights and activations), each with its ratio and its max abs
difference to diffusers' fp32 prediction: pointers to what would make the forward faster, not
the goal's figure (the goal compares the default fp32 forward).

Thread settings move the result more than anything in the model code (docs/benchmarks.md, the
KOALA section): both sides get this script's environment. Concord on Debian's LibTorch runs two
pools, libgomp's (convolutions, elementwise ops) and OpenBLAS's pthread pool (GEMMs); with
libgomp's default spin-waiting they starve each other (1.5-1.7 s a forward on the quiet VM, 7.6 s
at load average 4), with OMP_WAIT_POLICY=PASSIVE 0.8-1.0 s. diffusers' torch runs MKL and oneDNN
on one libgomp pool and is fastest in the default environment (0.63-0.70 s; passive 0.73-1.2 s).
The project's convention on the shared VM is OMP_WAIT_POLICY=PASSIVE for both;
--diffusers-default-env runs the baseline without it (each side at its faster setting).

--backward (parity only) times a training step's model work instead of a forward, on both sides:
the forward under autograd and backward() of <g, prediction> for a fixed cotangent g (N(0, 1),
seed 2, in the shared inputs file) into every parameter's gradient, reset before each call
(zero_grad(set_to_none=True)); no optimizer. The figure is diffusers' time / Concord's as
before, and the gradients of four parameters (bench_unet's kGradientsWritten: conv_in, a 3x3
convolution at each of the first two levels, a self-attention projection) are compared as the
prediction is, relative to each one's largest value.

--device cuda runs both sides on the GPU (device 0; scripts/gpu-check.sh does, with
--students-latent 128, SDXL's 1024 x 1024): each timed call waits for the device, and the
memory column is the most the CUDA caching allocator handed out at once (torch's
max_memory_allocated, on both sides) instead of the peak resident set. --dtype bf16 runs the
weights and activations of both sides (the parity model) and of the students in bf16; the parity
model's output difference is then of bf16's order, not fp32's.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def peak_rss_bytes():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def parity_config(channels):
    heads = [c // 64 for c in channels]
    time_dim = 256
    pooled = 256
    return dict(
        sample_size=32, in_channels=4, out_channels=4, center_input_sample=False,
        flip_sin_to_cos=True, freq_shift=0,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        block_out_channels=list(channels), layers_per_block=2, transformer_layers_per_block=[1, 2, 4],
        attention_head_dim=heads, norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=256,
        use_linear_projection=True, upcast_attention=False, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=pooled + 6 * time_dim,
        act_fn="silu", downsample_padding=1, mid_block_scale_factor=1, dropout=0.0), pooled


def randomise(model, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    norms = {name for name, m in model.named_modules()
             if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            owner, _, leaf = name.rpartition(".")
            if owner in norms and leaf == "weight":
                p.copy_(1.0 + 0.1 * noise)
            elif p.dim() >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.1 * noise)


# The gradients both sides write with --backward --output (bench_unet.cpp's kGradientsWritten).
GRADIENTS_WRITTEN = ["conv_in.weight", "down_blocks.0.resnets.0.conv1.weight",
                     "down_blocks.1.resnets.0.conv2.weight",
                     "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight"]


# Concord variants timed beside the baseline with --concord-variants: experiments that point at
# what would make the forward faster, not the library's default behaviour.
VARIANTS = {"direct-conv": ["--direct-conv"], "channels-last": ["--channels-last"], "bf16": ["--dtype", "bf16"],
            "bf16-channels-last": ["--dtype", "bf16", "--channels-last"]}


def categorise(op):
    """The group an ATen operator's self time counts under."""
    name = op.split("::")[-1]
    if "conv" in name:
        return "convolution"
    if "attention" in name or "softmax" in name or name == "baddbmm" or name == "bmm":
        return "attention (ATen)"
    if name in ("mm", "addmm", "matmul", "linear"):
        return "GEMM (linear layers)"
    if "group_norm" in name:
        return "GroupNorm"
    if "layer_norm" in name:
        return "LayerNorm"
    if name in ("gelu", "silu", "silu_"):
        return "GELU / SiLU"
    if name in ("add", "add_", "mul", "mul_", "div", "div_", "sub", "chunk", "split"):
        return "elementwise add / mul"
    if name in ("copy_", "cat", "contiguous", "clone", "upsample_nearest2d", "_to_copy", "to",
                "permute", "transpose", "reshape", "view", "_reshape_alias", "as_strided",
                "empty", "empty_like", "empty_strided", "t", "expand", "unsqueeze", "slice",
                "narrow", "select", "resize_", "flatten"):
        return "copies, layout, allocation"
    return "other ATen"


def worker_diffusers(args):
    """--worker diffusers: one process, the baseline's timing, printed as bench_unet prints it."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_pretrained(args.model).to(device, dtype).eval()
    load_s = time.perf_counter() - t0
    x = {k: v.to(device, dtype if v.is_floating_point() and k != "timestep" else v.dtype)
         for k, v in load_file(args.inputs).items()}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def forward():
        return unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": x["text_embeds"], "time_ids": x["time_ids"]}).sample

    def step():
        """A forward, or with --backward the forward and backward bench_unet --backward times."""
        if not args.backward:
            return forward()
        unet.zero_grad(set_to_none=True)
        y = forward()
        y.backward(x["cotangent"])
        return y.detach()

    times, out = [], None
    with torch.inference_mode(not args.backward):
        for _ in range(args.warmup):
            out = step()
        sync()
        for _ in range(args.iters):
            t = time.perf_counter()
            out = step()
            sync()
            times.append(time.perf_counter() - t)
        result = {"seconds_per_forward": statistics.median(times), "min_seconds": min(times),
                  "peak_rss_bytes": peak_rss_bytes(), "device": args.device, "dtype": args.dtype,
                  "parameters": sum(p.numel() for p in unet.parameters()), "load_seconds": load_s,
                  "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "attn_processor": type(unet.attn_processors[next(iter(unet.attn_processors))]).__name__}
        if args.profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t = time.perf_counter()
                for _ in range(args.iters):
                    step()
                result["profiled_seconds_per_forward"] = (time.perf_counter() - t) / args.iters
            result["profile"] = {e.key: {"ms_per_forward": e.self_cpu_time_total / 1e3 / args.iters,
                                         "calls_per_forward": e.count // args.iters}
                                 for e in prof.key_averages()}
    if device.type == "cuda":
        result["peak_device_bytes"] = torch.cuda.max_memory_allocated(device)
    if args.output:
        written = {"sample_out": out.float().cpu().contiguous()}
        if args.backward:
            params = dict(unet.named_parameters())
            for name in GRADIENTS_WRITTEN:
                written["grad." + name] = params[name].grad.float().cpu().contiguous()
        save_file(written, args.output)
    print(json.dumps(result))
    return 0


def run_json(cmd, env=None):
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"bench_unet.py: {' '.join(map(str, cmd))} failed ({run.returncode}):\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def group_profile(ours, theirs):
    rows = {}
    for side, prof in (("concord", ours), ("diffusers", theirs)):
        for op, v in prof.items():
            if op.startswith("ProfilerStep") or "::" not in op:
                continue  # torch.profiler's own frames
            cat = categorise(op)
            rows.setdefault(cat, {"concord": 0.0, "diffusers": 0.0})[side] += v["ms_per_forward"]
    return rows


def part_parity(args):
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    channels = [int(c) for c in args.parity_channels.split(",")]
    config, pooled = parity_config(channels)
    B, S, L = args.parity_batch, args.parity_latent, args.text_length
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).float().eval()
    randomise(unet, 0)
    g = torch.Generator().manual_seed(1)
    px = float(S * 8)
    inputs = {
        "sample": torch.randn(B, 4, S, S, generator=g),
        "timestep": torch.tensor([999.0 if b % 2 == 0 else 10.0 for b in range(B)]),
        "encoder_hidden_states": torch.randn(B, L, config["cross_attention_dim"], generator=g),
        "text_embeds": torch.randn(B, pooled, generator=g),
        "time_ids": torch.tensor([[px, px, 0.0, 0.0, px, px]] * B),
    }
    if args.backward:
        inputs["cotangent"] = torch.randn(B, 4, S, S, generator=torch.Generator().manual_seed(2))
    params = sum(p.numel() for p in unet.parameters())
    out = {"config": config, "parameters": params, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "unet"
        unet.save_pretrained(folder, safe_serialization=True)
        del unet
        save_file(inputs, Path(tmp) / "inputs.safetensors")
        common = ["--inputs", str(Path(tmp) / "inputs.safetensors"), "--warmup", str(args.warmup),
                  "--iters", str(args.iters), "--threads", str(args.threads),
                  "--device", args.device, "--dtype", args.dtype] + (["--backward"] if args.backward else [])
        ours_cmd = [args.bin, "--model", str(folder), *common, "--output", str(Path(tmp) / "ours.safetensors")]
        theirs_cmd = [sys.executable, __file__, "--worker", "diffusers", "--model", str(folder), *common,
                      "--output", str(Path(tmp) / "theirs.safetensors")]
        variants = [v for v in args.concord_variants.split(",") if v]
        for v in variants:
            if v not in VARIANTS:
                sys.exit(f"bench_unet.py: unknown variant '{v}' ({', '.join(VARIANTS)})")
        profiles = []
        # --diffusers-default-env: the baseline without OMP_WAIT_POLICY (its faster setting)
        # while Concord keeps the environment it was given.
        their_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} \
            if args.diffusers_default_env else None
        for r in range(args.rounds):
            load = os.getloadavg()
            ours = run_json(ours_cmd)
            theirs = run_json(theirs_cmd, env=their_env)
            row = {"load_before": load, "concord": ours, "diffusers": theirs,
                   "ratio": theirs["seconds_per_forward"] / ours["seconds_per_forward"]}
            for v in variants:
                row[v] = run_json([args.bin, "--model", str(folder), *common, *VARIANTS[v],
                                   "--output", str(Path(tmp) / f"{v}.safetensors")])
            out["rounds"].append(row)
            print(f"  round {r + 1}: load {load[0]:.2f}  concord {ours['seconds_per_forward']:.3f} s  "
                  f"diffusers {theirs['seconds_per_forward']:.3f} s  ratio {row['ratio']:.2f}x"
                  + "".join(f"  {v} {row[v]['seconds_per_forward']:.3f} s" for v in variants), flush=True)
            if args.profile:
                # Profiled in separate processes after the timed ones (the profiler slows both).
                p_ours = run_json(ours_cmd + ["--profile"])
                p_theirs = run_json(theirs_cmd + ["--profile"], env=their_env)
                grouped = group_profile(p_ours["profile"], p_theirs["profile"])
                # Wall time of the profiled calls outside every ATen operator: Concord's own
                # kernels (ops::attention) and module code; Python, diffusers' modules and the
                # profiler's own bookkeeping on the other side.
                grouped["outside ATen operators"] = {
                    "concord": 1e3 * p_ours["seconds_per_forward"] - sum(g["concord"] for g in grouped.values()),
                    "diffusers": 1e3 * p_theirs["profiled_seconds_per_forward"]
                    - sum(g["diffusers"] for g in grouped.values())}
                profiles.append((grouped, {"concord": p_ours["profile"], "diffusers": p_theirs["profile"]}))
        files = {name: load_file(Path(tmp) / f"{name}.safetensors") for name in ["ours", "theirs", *variants]}
        outputs = {name: f["sample_out"].double() for name, f in files.items()}
        out["max_abs_diff"] = (outputs["ours"] - outputs["theirs"]).abs().max().item()
        if args.backward:
            out["gradient_rel_diff"] = {}
            for name in GRADIENTS_WRITTEN:
                ours_g, theirs_g = (files[s]["grad." + name].double() for s in ("ours", "theirs"))
                out["gradient_rel_diff"][name] = ((ours_g - theirs_g).abs().max() / theirs_g.abs().max()).item()
        out["output_std"] = outputs["theirs"].std().item()
        out["variants_max_abs_diff"] = {v: (outputs[v] - outputs["theirs"]).abs().max().item() for v in variants}
        if profiles:
            # Median over rounds of each group's time, each side.
            cats = {c for grouped, _ in profiles for c in grouped}
            out["profile"] = {c: {side: statistics.median(g.get(c, {}).get(side, 0.0) for g, _ in profiles)
                                  for side in ("concord", "diffusers")} for c in cats}
            out["profile_ops"] = profiles[-1][1]
    assert out["rounds"][-1]["concord"]["parameters"] == params, "parameter counts differ"
    rs = out["rounds"]
    our_s = statistics.median(r["concord"]["seconds_per_forward"] for r in rs)
    their_s = statistics.median(r["diffusers"]["seconds_per_forward"] for r in rs)
    ratio = statistics.median(r["ratio"] for r in rs)
    out.update(concord_seconds=our_s, diffusers_seconds=their_s, ratio=ratio)
    print(f"parity model: SDXL layout, channels {channels}, heads {[c // 64 for c in channels]}, "
          f"{params / 1e6:.1f}M parameters; batch {B}, latent {S}x{S}, text {L}; {args.dtype} on "
          f"{args.device}, {args.threads} threads, "
          f"median of {args.iters} after {args.warmup} warm-up, {args.rounds} rounds")
    env = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"  OMP_WAIT_POLICY: concord {env}, diffusers {'default' if args.diffusers_default_env else env}")
    mem = memory_key(args)
    unit = "s / fwd+bwd" if args.backward else "s / forward"
    print(f"  {'':36s} {unit:>12s} {MEMORY_LABEL[mem]:>10s}")
    print(f"  {'concord (libtorch ' + rs[-1]['concord']['libtorch'] + ')':36s} {our_s:12.3f} "
          f"{rs[-1]['concord'][mem] / 1e9:8.2f} GB")
    print(f"  {'diffusers ' + '0.42.1' + ' (torch ' + rs[-1]['diffusers']['torch'] + ')':36s} {their_s:12.3f} "
          f"{rs[-1]['diffusers'][mem] / 1e9:8.2f} GB  ({rs[-1]['diffusers']['attn_processor']})")
    print(f"  ratio diffusers / concord: {ratio:.2f}x (rounds: {', '.join('%.2fx' % r['ratio'] for r in rs)}); "
          + (f"goal >= 1.5x {'met' if ratio >= 1.5 else 'NOT met'}; "
             if (args.device, args.dtype, args.backward) == ("cpu", "fp32", False)
             else "(the goal is the CPU's fp32 forward) ")
          + f"max abs output difference "
          f"{out['max_abs_diff']:.2e} (output std {out['output_std']:.3f})")
    for name, d in out.get("gradient_rel_diff", {}).items():
        print(f"  gradient of {name}: max difference / max {d:.2e}")
    for v in out["variants_max_abs_diff"]:
        v_s = statistics.median(r[v]["seconds_per_forward"] for r in rs)
        print(f"  variant {v:20s} {v_s:8.3f} s: diffusers / it {their_s / v_s:.2f}x, concord default / it "
              f"{our_s / v_s:.2f}x, max abs difference to diffusers {out['variants_max_abs_diff'][v]:.2e}")
    if args.profile:
        print(f"  where the time goes (self time of ATen operators, ms per profiled forward, median of "
              f"{len(rs)} profiled runs a side):")
        prof = out["profile"]
        for cat in sorted(prof, key=lambda c: -prof[c]["concord"]):
            print(f"    {cat:32s} concord {prof[cat]['concord']:9.1f}   diffusers {prof[cat]['diffusers']:9.1f}")
        tot = {s: sum(v[s] for v in prof.values()) for s in ("concord", "diffusers")}
        print(f"    {'wall time of a profiled forward':32s} concord {tot['concord']:9.1f}   diffusers "
              f"{tot['diffusers']:9.1f}  (Concord's ops::attention is no ATen operator: it is "
              f"under 'outside ATen operators')")
        for side in ("concord", "diffusers"):
            ops = out["profile_ops"][side]
            top = sorted((v["ms_per_forward"], k, v["calls_per_forward"]) for k, v in ops.items()
                         if "::" in k and not k.startswith("ProfilerStep"))[::-1][:8]
            print(f"    {side} top operators: " + ", ".join(f"{k} {ms:.1f} ms ({n} calls)" for ms, k, n in top))
    return out


# The memory figure of a row: the peak resident set on the CPU, the CUDA allocator's peak on a GPU.
MEMORY_LABEL = {"peak_rss_bytes": "peak RSS", "peak_device_bytes": "peak GPU"}


def memory_key(args):
    return "peak_device_bytes" if args.device == "cuda" else "peak_rss_bytes"


def part_students(args):
    rows = []
    mem = memory_key(args)
    for name in args.students.split(","):
        config = ROOT / "configs" / "models" / f"{name}.json"
        load = os.getloadavg()
        r = run_json([args.bin, "--model", str(config), "--batch", "1", "--latent", str(args.students_latent),
                      "--text-length", str(args.text_length), "--warmup", str(args.warmup),
                      "--iters", str(args.students_iters), "--threads", str(args.threads),
                      "--device", args.device, "--dtype", args.dtype])
        if "skipped" in r:
            sys.exit(f"bench_unet.py: bench_unet skipped {name}: {r['skipped']}")
        r["name"], r["load_before"] = name, load
        rows.append(r)
        print(f"  {name}: load {load[0]:.2f}  {r['seconds_per_forward']:.3f} s  "
              f"{r[mem] / 1e9:.2f} GB", flush=True)
    base = rows[0]
    print(f"students against {base['name']}: Concord, {args.dtype} on {args.device}, batch 1, "
          f"latent {args.students_latent}x"
          f"{args.students_latent}, text {args.text_length}, {args.threads} threads, median of "
          f"{args.students_iters} after {args.warmup} warm-up, one process each")
    print(f"  {'model':12s} {'parameters':>14s} {'s / forward':>12s} {'speed-up':>9s} "
          f"{MEMORY_LABEL[mem]:>10s} {'memory':>8s}")
    for r in rows:
        print(f"  {r['name']:12s} {r['parameters']:14,d} {r['seconds_per_forward']:12.3f} "
              f"{base['seconds_per_forward'] / r['seconds_per_forward']:8.2f}x "
              f"{r[mem] / 1e9:8.2f} GB {r[mem] / base[mem]:7.2f}x")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="path to the bench_unet binary")
    ap.add_argument("--parts", default="parity,students")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--text-length", type=int, default=77)
    ap.add_argument("--parity-channels", default="128,256,512")
    ap.add_argument("--parity-batch", type=int, default=2)
    ap.add_argument("--parity-latent", type=int, default=32)
    ap.add_argument("--students", default="sdxl-unet,koala-1b,koala-700m")
    ap.add_argument("--students-latent", type=int, default=32)
    ap.add_argument("--students-iters", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--concord-variants", default="",
                    help=f"comma-separated experiments timed beside the default: {', '.join(VARIANTS)}")
    ap.add_argument("--diffusers-default-env", action="store_true",
                    help="run diffusers without OMP_WAIT_POLICY (libgomp's default, its faster setting)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--backward", action="store_true",
                    help="parity: time forward + backward (every parameter's gradient), not a forward")
    ap.add_argument("--json-out", help="write every figure here")
    # Internal: the diffusers side in a process of its own.
    ap.add_argument("--worker", choices=["diffusers"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_diffusers(args)
    if not args.bin:
        ap.error("--bin is required")
    parts = args.parts.split(",")
    unknown = set(parts) - {"parity", "students"}
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; valid: parity, students")
    print(f"bench_unet.py, {time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()}, "
          f"{os.cpu_count()} CPUs", flush=True)
    result = {}
    if "parity" in parts:
        result["parity"] = part_parity(args)
    if "students" in parts:
        result["students"] = part_students(args)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
