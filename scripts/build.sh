#!/usr/bin/env bash
# Configures and builds Concord. Used by quickstart.sh and test.sh. Logs go to stderr; the last
# line on stdout is the build folder.
#   scripts/build.sh [debian|pip-torch|pip-ops|asan] [extra cmake args...]
# debian:    Debian's LibTorch 1.13 (CPU), the default flavour.
# pip-torch: the CUDA LibTorch inside PyPI's torch wheel (scripts/python-env.sh installs it;
#            CONCORD_TORCH_CMAKE_PREFIX names another, as scripts/gpu-bundle.sh does);
#            the CUDA kernels and dispatch compile with nvcc, *_CUDA tests skip without a device.
#            The benchmarks build too (both builds are measured side by side), examples do not;
#            scripts/test.sh builds this flavour only with CONCORD_PIP_ALL_TESTS=1.
# pip-ops:   the ops layer alone (CMake option CONCORD_OPS_ONLY) on the wheel's CUDA LibTorch:
#            concord_ops with the CUDA kernels and dispatch, and test_ops. What CI's pip flavour
#            builds (scripts/test.sh); scripts/gpu-check.sh builds the same on a device.
# asan:      Debian's LibTorch, everything compiled with -fsanitize=address,undefined (-O1,
#            line tables), building only the parser tests (target parser_tests, ctest label
#            `parsers`: test_core, test_io, test_text, test_data, the fuzz corpus replays
#            over concord_core and the checkpoint's) unless CONCORD_TARGETS says otherwise.
# Every flavour is a unity build (CMake option CONCORD_UNITY: each target's sources compile in
# batches, about half the cold compile time); CONCORD_UNITY=OFF compiles file by file, for an
# edit-compile loop where one changed file should recompile alone.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
flavour="${1:-debian}"
shift || true

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/concord/ccache}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$root}"  # cache hits across clones
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
jobs="${CONCORD_JOBS:-$(nproc)}"
unity="-DCONCORD_UNITY=${CONCORD_UNITY:-ON}"

case "$flavour" in
  debian)
    build="${CONCORD_BUILD_DIR:-$root/build}"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCONCORD_CUDA=AUTO "$unity" "$@" >&2
    ;;
  pip-torch)
    build="${CONCORD_BUILD_DIR:-$root/build-pip-torch}"
    prefix="${CONCORD_TORCH_CMAKE_PREFIX:-$("$root/scripts/python-env.sh" --print-torch-cmake)}"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCONCORD_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
      -DCONCORD_BUILD_BENCHMARKS=ON -DCONCORD_BUILD_EXAMPLES=OFF "$unity" "$@" >&2
    ;;
  pip-ops)
    build="${CONCORD_BUILD_DIR:-$root/build-pip-ops}"
    prefix="$("$root/scripts/python-env.sh" --print-torch-cmake)"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCONCORD_CUDA=ON \
      -DCONCORD_OPS_ONLY=ON -DCMAKE_PREFIX_PATH="$prefix" \
      -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCONCORD_BUILD_BENCHMARKS=OFF "$unity" "$@" >&2
    ;;
  asan)
    build="${CONCORD_BUILD_DIR:-$root/build-asan}"
    cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCONCORD_SANITIZE=address,undefined \
      -DCONCORD_CUDA=OFF -DCONCORD_BUILD_BENCHMARKS=OFF -DCONCORD_BUILD_EXAMPLES=OFF "$unity" "$@" >&2
    CONCORD_TARGETS="${CONCORD_TARGETS:-parser_tests}"  # fuzz/CMakeLists.txt defines it
    ;;
  *)
    echo "build.sh: unknown flavour '$flavour' (debian, pip-torch, pip-ops or asan)" >&2
    exit 2
    ;;
esac
# CONCORD_TARGETS limits the build (quickstart needs only the CLI).
targets=()
for t in ${CONCORD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build" -j "$jobs" "${targets[@]}" >&2
echo "$build"
