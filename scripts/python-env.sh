#!/usr/bin/env bash
# The Python environment for fixture scripts, peer benchmarks and the pip-torch LibTorch flavour.
# Lives under ~/.cache/concord/venv, outside the checkout, so CI on the same machine reuses it.
# Idempotent. `--print-torch-cmake` prints the wheel's CMake prefix (for CMAKE_PREFIX_PATH);
# `--bench` adds the benchmarks' heavy peers (below).
set -euo pipefail
venv="${CONCORD_VENV:-$HOME/.cache/concord/venv}"
# torch 2.15.0 ships CUDA 13.2 runtime libraries; nvcc here is 13.0, and CUDA's minor-version
# compatibility lets 13.0-compiled kernels run beside the 13.2 runtime. Pinned so the CI flavour
# does not move under us. transformers: the LM fixtures and the baselines of
# benchmarks/bench_train_step.py and bench_generate.py. diffusers: the UNet2DConditionModel and
# DDPM/Euler schedulers that scripts/fixtures/make_diffusion_fixtures.py draws its references from
# (0.42.1 is the newest release; it runs on torch 2.15 with huggingface-hub 2.x).
requirements=(torch==2.15.0 numpy safetensors==0.8.0 tokenizers==0.23.3 sentencepiece==0.2.3
              transformers==5.24.0 diffusers==0.42.1)

if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" >&2
fi
stamp="$venv/.concord-requirements"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${requirements[*]}" ]]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}" >&2
  echo "${requirements[*]}" > "$stamp"
fi
# `--bench`: also the heavy peers that only benchmarks run (lm-evaluation-harness brings datasets,
# pandas, scikit-learn, ...; its HF backend imports accelerate), for benchmarks/bench_tumlu_loglik.py.
# trl: the RLHF peers of benchmarks/bench_reward_step.py and bench_ppo_iteration.py, and the
# reference math of scripts/fixtures/make_rlhf_fixtures.py. 1.12.0 is the newest release with a
# PPOTrainer (trl.experimental.ppo; 1.13.0 removed it); it runs on transformers 5.24 / torch 2.15.
bench_requirements=(lm-eval==0.4.13 accelerate==1.15.0 trl==1.12.0)
if [[ " $* " == *" --bench "* ]]; then
  bench_stamp="$venv/.concord-bench-requirements"
  if [[ ! -f "$bench_stamp" || "$(cat "$bench_stamp")" != "${bench_requirements[*]}" ]]; then
    "$venv/bin/pip" install -q --disable-pip-version-check "${bench_requirements[@]}" >&2
    echo "${bench_requirements[*]}" > "$bench_stamp"
  fi
fi
if [[ "${1:-}" == "--print-torch-cmake" ]]; then
  "$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)'
fi
