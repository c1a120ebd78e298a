#!/usr/bin/env bash
# Builds the whole library's GPU checks here, for the GPU machine, which has a pip torch but none
# of Concord's Debian dev packages and no network: the test binaries of the folders with *_CUDA
# tests (ops, train, rlhf, diffusion), the kernel benchmarks and bench_unet, compiled against the
# LibTorch inside PyPI's torch wheel of the version the GPU machine's Python has, with the CUDA
# kernels for its architecture, then packed with every shared library they load beyond LibTorch,
# CUDA and the C/C++ runtime into .gpu-deps/bundle.tar.xz (git-ignored; the device tool carries
# it). scripts/gpu-check.sh runs the bundle there when its LibTorch is that version, and builds
# the ops layer from source otherwise.
#
#   scripts/gpu-bundle.sh [--torch-version 2.11.0] [--arch 9.0] [--jobs N]
#
# --torch-version: the GPU machine's torch (python3 -c 'import torch; print(torch.__version__)'
#   there; ../.library/device/KINDS.md records 2.11.0+cu130). The wheel (~530 MB) is fetched once
#   into ~/.cache/concord/wheels and unpacked into ~/.cache/concord/libtorch-<version>; the build
#   lives in build-gpu-bundle/ and reuses ccache. --arch: TORCH_CUDA_ARCH_LIST (9.0: H100/H200).
#
# Linking: the wheel's libtorch_cuda.so needs CUDA libraries that this machine's toolkit lacks
# (cuFile, cuSPARSELt, NVSHMEM); the GPU machine has them beside its torch, so the links allow
# undefined symbols in shared libraries and resolve the rest from /usr/local/cuda/lib.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_version=2.11.0
arch=9.0
jobs="${CONCORD_JOBS:-$(nproc)}"
while [ $# -gt 0 ]; do
  case "$1" in
    --torch-version) torch_version="$2"; shift ;;
    --arch) arch="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu-bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
torch_version="${torch_version%%+*}"  # 2.11.0+cu130 -> 2.11.0: PyPI's wheel carries no local tag
cache="$HOME/.cache/concord"
cuda_lib=/usr/local/cuda/lib
[ -d "$cuda_lib" ] || cuda_lib=/usr/local/cuda/lib64

# 1. The wheel's LibTorch.
libtorch="$cache/libtorch-$torch_version"
if [ ! -f "$libtorch/.unpacked" ]; then
  "$root/scripts/python-env.sh" >&2  # a pip that reaches PyPI
  python="${CONCORD_VENV:-$HOME/.cache/concord/venv}/bin/python"
  mkdir -p "$cache/wheels"
  wheel=("$cache"/wheels/torch-"$torch_version"-*.whl)
  if [ ! -e "${wheel[0]}" ]; then
    echo "gpu-bundle: fetching torch==$torch_version (~530 MB) into $cache/wheels" >&2
    "$python" -m pip download -q --no-deps --disable-pip-version-check "torch==$torch_version" \
      -d "$cache/wheels" >&2
    wheel=("$cache"/wheels/torch-"$torch_version"-*.whl)
  fi
  rm -rf "$libtorch"
  mkdir -p "$libtorch"
  python3 - "${wheel[0]}" "$libtorch" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist()
             if n.startswith(("torch/include/", "torch/lib/", "torch/share/")) or n == "torch/version.py"]
    z.extractall(dest, names)
PY
  touch "$libtorch/.unpacked"
fi
full_version="$(sed -n "s/^__version__ = '\(.*\)'$/\1/p" "$libtorch/torch/version.py")"
case "$full_version" in
  *+cu*) ;;
  *) echo "gpu-bundle: PyPI's torch $full_version has no CUDA" >&2; exit 1 ;;
esac

# 2. The build.
build="$root/build-gpu-bundle"
targets=(test_ops test_train test_rlhf test_diffusion bench_ops_attention bench_ops_siaf
         bench_ops_augmented_shortcut bench_ops_geglu bench_unet)
link="-Wl,--allow-shlib-undefined -Wl,-rpath-link,$cuda_lib"
CONCORD_BUILD_DIR="$build" CONCORD_JOBS="$jobs" CONCORD_TARGETS="${targets[*]}" \
  CONCORD_TORCH_CMAKE_PREFIX="$libtorch/torch/share/cmake" "$root/scripts/build.sh" pip-torch \
  -DTORCH_CUDA_ARCH_LIST="$arch" -DCMAKE_EXE_LINKER_FLAGS="$link" \
  -DCMAKE_SHARED_LINKER_FLAGS="$link" >/dev/null

# 3. The bundle: stripped binaries in bin/, and in lib/ each shared library they load that is
#    not LibTorch's, CUDA's or the C/C++ runtime's (those the GPU machine has, newer).
stage="$build/bundle-stage"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib"
for t in "${targets[@]}"; do
  bin="$(find "$build/tests" "$build/benchmarks" -maxdepth 1 -name "$t" -type f | head -1)"
  [ -n "$bin" ] || { echo "gpu-bundle: $t was not built" >&2; exit 1; }
  strip --strip-unneeded -o "$stage/bin/$t" "$bin"
done
system='^(linux-vdso|ld-linux|libc|libm|libdl|librt|libpthread|libstdc\+\+|libgcc_s|libgomp)\.'
LD_LIBRARY_PATH="$libtorch/torch/lib:$cuda_lib" ldd "$stage"/bin/* |
  awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
  while read -r name path; do
    [[ "$name" =~ $system ]] && continue
    case "$path" in "$libtorch"/*|/usr/local/cuda*) continue ;; esac
    cp -L "$path" "$stage/lib/$name"
  done
commit="$(git -C "$root" rev-parse HEAD)"
dirty=false
[ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ] && dirty=true
cat > "$stage/bundle.json" <<EOF
{"torch": "$full_version", "commit": "$commit", "dirty": $dirty, "arch": "$arch",
 "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "host": "$(. /etc/os-release && echo "$PRETTY_NAME")",
 "glibc": "$(getconf GNU_LIBC_VERSION | cut -d' ' -f2)",
 "targets": "${targets[*]}"}
EOF
mkdir -p "$root/.gpu-deps"
tar -C "$stage" -cf - . | xz -T0 -6 > "$root/.gpu-deps/bundle.tar.xz.tmp"
mv "$root/.gpu-deps/bundle.tar.xz.tmp" "$root/.gpu-deps/bundle.tar.xz"
cp "$stage/bundle.json" "$root/.gpu-deps/bundle.json"
echo "gpu-bundle: $(du -h "$root/.gpu-deps/bundle.tar.xz" | cut -f1) .gpu-deps/bundle.tar.xz" \
  "(torch $full_version, $(ls "$stage/lib" | wc -l) libraries, commit ${commit:0:7}$($dirty && echo ' + local changes'))" >&2
