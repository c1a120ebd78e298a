#!/usr/bin/env bash
# The Python environment for fixture scripts, peer benchmarks and the pip-torch LibTorch flavour.
# Lives under ~/.cache/concord/venv, outside the checkout, so CI on the same machine reuses it.
# Idempotent. `--print-torch-cmake` prints the wheel's CMake prefix (for CMAKE_PREFIX_PATH).
set -euo pipefail
venv="${CONCORD_VENV:-$HOME/.cache/concord/venv}"
# torch 2.15.0 ships CUDA 13.2 runtime libraries; nvcc here is 13.0, and CUDA's minor-version
# compatibility lets 13.0-compiled kernels run beside the 13.2 runtime. Pinned so the CI flavour
# does not move under us.
requirements=(torch==2.15.0 numpy safetensors==0.8.0 tokenizers==0.23.3 sentencepiece==0.2.3)

if [[ ! -x "$venv/bin/python" ]]; then
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" >&2
fi
stamp="$venv/.concord-requirements"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${requirements[*]}" ]]; then
  "$venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}" >&2
  echo "${requirements[*]}" > "$stamp"
fi
if [[ "${1:-}" == "--print-torch-cmake" ]]; then
  "$venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)'
fi
