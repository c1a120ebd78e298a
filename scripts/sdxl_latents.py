#!/usr/bin/env python3
"""Latent shards for the koala_kd task (docs/koala.md, "Latent shards"): image-caption pairs
encoded once by SDXL's VAE and its two text encoders, so distillation never runs them again.

Input: JSONL, one {"image": path, "caption": text} a line (paths relative to the file).
Output: OUT/latents-00000.safetensors, ... each holding, for --per-shard samples (rounded up to
whole batches; the last shard the rest),

  latents                [N, 4, S/8, S/8]  vae.encode(x).latent_dist.sample() * scaling_factor
  encoder_hidden_states  [N, 77, 2048]     both text encoders' penultimate states, concatenated
  text_embeds            [N, 1280]         text_encoder_2's pooled (projected) embedding
  time_ids               [N, 6]            original h, w, crop top, left, target h, w (pixels)

as --dtype (default float16: half the disk of float32; Concord reads either as fp32; time_ids
always float32). Images
are resized (shorter side to S) and centre-cropped to S x S; the crop and the original size go
into time_ids as SDXL's training does. The VAE runs in float32 (SDXL's VAE overflows in fp16).

  python scripts/sdxl_latents.py pairs.jsonl data/sdxl-latents \\
      --model stabilityai/stable-diffusion-xl-base-1.0 --device cuda

--model is a diffusers SDXL folder or Hub id. Needs diffusers, transformers, safetensors and
Pillow (the environment of scripts/python-env.sh).
"""
import argparse
import json
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file


def load_pairs(path):
    base = Path(path).parent
    pairs = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if "image" not in record or "caption" not in record:
            raise SystemExit(f"{path}:{number}: needs \"image\" and \"caption\"")
        pairs.append((base / record["image"], record["caption"]))
    return pairs


def crop(image, size):
    """Shorter side to `size`, centre crop; returns the crop and its time_ids."""
    w, h = image.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((rw, rh), Image.BICUBIC)
    top, left = (rh - size) // 2, (rw - size) // 2
    return image.crop((left, top, left + size, top + size)), [h, w, top, left, size, size]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pairs")
    p.add_argument("out")
    p.add_argument("--model", default="stabilityai/stable-diffusion-xl-base-1.0")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels (SDXL: 1024)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--per-shard", type=int, default=1024)
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(args.model, torch_dtype=torch.float32)
    for module in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.to(args.device).eval()  # the U-Net stays where it was loaded, unused
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("*.safetensors")):
        raise SystemExit(f"{out} already holds *.safetensors files (koala_kd would read them too)")
    dtype = getattr(torch, args.dtype)
    pairs = load_pairs(args.pairs)
    shard, rows, written = {}, 0, 0

    def flush():
        nonlocal shard, rows, written
        if rows:
            path = out / f"latents-{written:05d}.safetensors"
            # time_ids stay float32: pixel sizes past 2048 are not exact in float16.
            save_file({k: torch.cat(v).to(torch.float32 if k == "time_ids" else dtype).contiguous()
                       for k, v in shard.items()}, str(path))
            print(f"{path}: {rows} samples")
            written += 1
        shard, rows = {}, 0

    for start in range(0, len(pairs), args.batch):
        batch = pairs[start:start + args.batch]
        images, ids = zip(*(crop(Image.open(path).convert("RGB"), args.size) for path, _ in batch))
        with torch.no_grad():
            x = pipe.image_processor.preprocess(list(images)).to(args.device, torch.float32)
            latents = pipe.vae.encode(x).latent_dist.sample() * pipe.vae.config.scaling_factor
            states, _, pooled, _ = pipe.encode_prompt(
                [caption for _, caption in batch], device=args.device, do_classifier_free_guidance=False)
        tensors = {"latents": latents, "encoder_hidden_states": states, "text_embeds": pooled,
                   "time_ids": torch.tensor(ids, dtype=torch.float32)}
        for key, value in tensors.items():
            shard.setdefault(key, []).append(value.float().cpu())
        rows += len(batch)
        if rows >= args.per_shard:
            flush()
    flush()


if __name__ == "__main__":
    main()
