#!/usr/bin/env bash
# The whole test suite, as README's second command and CI (.ci/run) run it:
# installs what it needs, then builds and tests both LibTorch flavours:
#   1. Debian's LibTorch 1.13 (CPU): every test.
#   2. PyPI torch's CUDA LibTorch: the CUDA kernels and dispatch compile and link; the suite runs
#      again, *_CUDA tests skip without a device.
# CONCORD_FLAVOURS="debian" limits it to the first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavours="${CONCORD_FLAVOURS:-debian pip-torch}"

"$root/scripts/install-deps.sh"
export CONCORD_SHARED_DIR="${CONCORD_SHARED_DIR:-$root/../shared}"
# ctest runs one test binary per core; each one on one intra-op thread keeps OpenMP workers
# from spinning against each other (two 2-thread processes on 2 cores ran 5-10x slower).
export CONCORD_NUM_THREADS="${CONCORD_NUM_THREADS:-1}"

status=0
for flavour in $flavours; do
  start=$(date +%s)
  echo "=== flavour $flavour: build ==="
  build="$("$root/scripts/build.sh" "$flavour" | tail -n 1)"
  echo "=== flavour $flavour: test ==="
  if ! ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900; then
    status=1
  fi
  echo "=== flavour $flavour: $(( $(date +%s) - start )) s ==="
done
exit $status
