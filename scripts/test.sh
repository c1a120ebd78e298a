#!/usr/bin/env bash
# The whole test suite, as README's second command and CI (.ci/run) run it:
# installs what it needs, then builds and tests both LibTorch flavours:
#   1. Debian's LibTorch 1.13 (CPU): every test.
#   2. PyPI torch's CUDA LibTorch: what differs there, the ops layer with its CUDA kernels and
#      dispatch (build.sh's pip-ops: concord_ops, nvcc's kernels, test_ops; *_CUDA tests skip
#      without a device). The layers above ops are the same code on the same inputs and ran in
#      flavour 1; building them again against the wheel cost a cold run ~20 minutes.
#      CONCORD_PIP_ALL_TESTS=1 builds the whole library, every test and benchmark against the
#      wheel (build.sh's pip-torch) and runs every test, the install test included: do that
#      after a change to the CUDA paths above ops (train's autocast and NCCL, the *_CUDA tests of
#      nn, lm, train, rlhf and diffusion) or to the LibTorch API the code uses.
#   3. asan: the parser tests (ctest label `parsers`: test_core, test_io, test_text, test_data,
#      the fuzz corpus replays over concord_core and the checkpoint's) built with AddressSanitizer
#      + UBSan on Debian's LibTorch. The first report (a bad access, UB, a leak) fails its test;
#      no single allocation may exceed 2 GB (a crafted file that asks for more is a failure, not
#      a slow test).
# CONCORD_FLAVOURS="debian" limits it to the first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavours="${CONCORD_FLAVOURS:-debian pip-torch asan}"

"$root/scripts/install-deps.sh"
export CONCORD_SHARED_DIR="${CONCORD_SHARED_DIR:-$root/../shared}"
# ctest runs one test binary per core; each one on one intra-op thread keeps OpenMP workers
# from spinning against each other (two 2-thread processes on 2 cores ran 5-10x slower).
export CONCORD_NUM_THREADS="${CONCORD_NUM_THREADS:-1}"

status=0
for flavour in $flavours; do
  start=$(date +%s)
  echo "=== flavour $flavour: build ==="
  build_flavour="$flavour"
  if [[ "$flavour" == pip-torch && "${CONCORD_PIP_ALL_TESTS:-0}" != 1 ]]; then
    build_flavour=pip-ops
  fi
  build="$("$root/scripts/build.sh" "$build_flavour" | tail -n 1)"
  echo "=== flavour $flavour: test ==="
  run=(ctest --test-dir "$build" --output-on-failure -j "$(nproc)" --timeout 900)
  if [[ "$flavour" == asan ]]; then
    # Leaks count too, less the system libraries' process-lifetime caches (scripts/lsan.supp).
    run=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:max_allocation_size_mb=2048}"
         "LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/scripts/lsan.supp:print_suppressions=0}"
         "UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" "${run[@]}" -L parsers)
  fi
  if ! "${run[@]}"; then
    status=1
  fi
  echo "=== flavour $flavour: $(( $(date +%s) - start )) s ==="
done
exit $status
