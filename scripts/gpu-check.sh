#!/usr/bin/env bash
# The GPU check of the whole library, for a machine with one GPU, a pip `torch` and none of
# Concord's Debian dev packages (the device tool's machines). Two ways, the first where it can:
#
# - The bundle (.gpu-deps/bundle.tar.xz, made here by scripts/gpu-bundle.sh): the test binaries
#   of every folder with *_CUDA tests (ops, train, rlhf, diffusion), the kernel benchmarks and
#   bench_unet, built on the development machine against the LibTorch of the GPU machine's torch
#   version, with the shared libraries they need. Used when that version is the one this
#   machine's Python has: it runs every *_CUDA test, the four binaries' CPU tests, the kernel
#   benchmarks' GPU cases, and bench_unet.py on the GPU (the KOALA students against SDXL's U-Net at SDXL's
#   1024 x 1024, and Concord's U-Net against diffusers' when the carried diffusers wheel
#   installs). Nothing compiles on the GPU machine.
# - From source: the ops layer alone (CMake option CONCORD_OPS_ONLY) against the LibTorch inside
#   that torch, with GoogleTest built from the sources of a .deb fetched ahead of time; test_ops
#   (the *_CUDA tests and the CPU ones) and the kernel benchmarks' GPU cases.
#
# Every result goes into one JSON file.
#
#   scripts/gpu-check.sh --prepare      here, once per commit, with network: the .deb files, the
#                                       diffusers wheels and the bundle into .gpu-deps/
#                                       (git-ignored; carry it to the GPU machine)
#   scripts/gpu-check.sh [OUT_DIR]      test and benchmark; results in OUT_DIR (default $OUT,
#                                       else ./gpu-check-out): gpu-check.json and gpu-check.log
#
# Options: --build DIR (default build-gpu-check; a second run continues the build),
#          --python PY (default $PYTHON, else python3: the interpreter whose torch to use),
#          --jobs N (default: the core count), --skip-cpu-tests, --skip-bench,
#          --from-source (the ops layer's source build even when the bundle fits),
#          --torch-version V (with --prepare: the GPU machine's torch, default 2.11.0).
# Without a GPU (e.g. on the development machine against the venv's torch) everything still
# builds and the CPU tests run; the *_CUDA tests skip, the GPU benchmark cases print "skipped",
# and the JSON says "cuda_available": false. Exit status 0 when every step ran and no test
# failed. Each step has a time limit, so one hang cannot eat the whole device lease, and the
# JSON is rewritten after every step, so a run cut short still leaves what it measured.
#
# A bundle from another commit still runs (bundle.json in the result names its commit).
# Not checked here: data parallel on c10d's NCCL (train/process_group.cpp). A 2-rank
# `concord launch` needs the whole library (Concord's Debian dev packages, absent on the device),
# a GPU per rank, and tasks that put rank r's model on cuda:r; see docs/distributed.md, "CUDA".
#
# What the device needs: bash, python3 with torch, cmake >= 3.22, ninja (or make), a C++17
# compiler, and nvcc for the CUDA kernels (without nvcc the CUDA dispatch is off, the ops run
# their composites on the GPU and the *_CUDA tests fail on that first). dpkg unpacks the .deb
# files when present, else Python does.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.gpu-deps"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

mode=run
out="${OUT:-}"
build="$root/build-gpu-check"
python="${PYTHON:-}"
jobs="$(nproc 2>/dev/null || echo 4)"
cpu_tests=1
bench=1
from_source=0
torch_version=2.11.0
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) mode=prepare ;;
    --from-source) from_source=1 ;;
    --torch-version) torch_version="$2"; shift ;;
    --build) build="$2"; shift ;;
    --python) python="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    --skip-cpu-tests) cpu_tests=0 ;;
    --skip-bench) bench=0 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu-check.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) out="$1" ;;
  esac
  shift
done

# ---- --prepare: the .deb files, the wheels and the bundle, made here --------------------------
# GoogleTest is the only dependency of a CONCORD_OPS_ONLY build besides LibTorch; Debian's
# `googletest` package holds its sources (/usr/src/googletest), built on the device with the
# device's compiler and LibTorch's C++ ABI (a prebuilt libgtest.a would tie it to Debian's).
# diffusers (pure Python) is the baseline of bench_unet.py; the GPU machine's image has torch,
# transformers, safetensors and huggingface_hub but not diffusers.
if [ "$mode" = prepare ]; then
  command -v apt-get >/dev/null || { echo "gpu-check.sh --prepare needs apt-get" >&2; exit 1; }
  mkdir -p "$deps/debs" "$deps/wheels"
  rm -f "$deps/debs"/*.deb "$deps/wheels"/*.whl
  (cd "$deps/debs" && apt-get download googletest) || exit 1
  "$root/scripts/python-env.sh" >/dev/null || exit 1
  "${CONCORD_VENV:-$HOME/.cache/concord/venv}/bin/python" -m pip download -q --no-deps \
    --disable-pip-version-check -d "$deps/wheels" diffusers==0.42.1 importlib_metadata zipp || exit 1
  "$root/scripts/gpu-bundle.sh" --torch-version "$torch_version" --jobs "$jobs" || exit 1
  {
    echo "# fetched by scripts/gpu-check.sh --prepare on $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for f in "$deps"/debs/*.deb "$deps"/wheels/*.whl "$deps/bundle.tar.xz"; do
      echo "${f#"$deps"/} $(sha256sum "$f" | cut -d' ' -f1)"
    done
  } > "$deps/MANIFEST"
  du -sh "$deps"
  echo "carry .gpu-deps to the GPU machine, then run scripts/gpu-check.sh there"
  exit 0
fi

# ---- run ---------------------------------------------------------------------------------------
[ -n "$out" ] || out="$root/gpu-check-out"
mkdir -p "$out" "$build"
work="$build/gpu-check"   # intermediate results (the JSON is assembled from them)
rm -rf "$work"
mkdir -p "$work"
log="$out/gpu-check.log"
: > "$log"
exec > >(tee -a "$log") 2>&1
started=$(date +%s)
echo "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), results in $out"

# step NAME LIMIT_S CMD...: runs CMD under a time limit and records rc and seconds.
step() {
  local name="$1" limit="$2"
  shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" >> "$work/steps.jsonl"
  [ $rc -eq 124 ] && echo "!! $name: timed out after ${limit}s"
  [ $rc -ne 0 ] && echo "!! $name: exit status $rc"
  summarise
  return $rc
}

# Assembles $out/gpu-check.json from what $work holds so far.
summarise() {
  "${python:-python3}" - "$work" "$out/gpu-check.json" "$started" <<'PY' || true
import json, os, sys, time
work, dest, started = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name, default):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default
def lines(name):
    rows = []
    try:
        with open(os.path.join(work, name)) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return rows
def gtest(name):
    g = load(name, None)
    if g is None:
        return None
    failed, skipped, passed = [], [], []
    for suite in g.get("testsuites", []):
        for t in suite.get("testsuite", []):
            full = suite["name"] + "." + t["name"]
            if t.get("failures"):
                failed.append({"test": full, "messages": [f.get("failure", "")[:2000] for f in t["failures"]]})
            elif t.get("result") == "SKIPPED":
                skipped.append(full)
            else:
                passed.append(full)
    return {"passed": len(passed), "failed": len(failed), "skipped": len(skipped),
            "failures": failed, "skipped_tests": skipped, "seconds": g.get("time")}
steps = lines("steps.jsonl")
# tests-<cpu|cuda>-<binary>.json, one per run of a test binary
tests = {}
for name in sorted(os.listdir(work)):
    if name.startswith("tests-") and name.endswith(".json"):
        t = gtest(name)
        if t:
            tests[name[len("tests-"):-len(".json")]] = t
env = load("env.json", {})
result = {
    "schema": "concord-gpu-check/1",
    "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "seconds": int(time.time()) - started,
    "device": env.get("device_name"),
    "cuda_available": env.get("cuda_available", False),
    "environment": env,
    "build": load("build.json", {}),
    "steps": steps,
    "tests": tests,
    "benchmarks": lines("bench.jsonl"),
    "bundle": load("bundle.json", None),
    "unet": {k: v for k, v in (("students", load("unet-students.json", None)),
                               ("parity", load("unet-parity.json", None)),
                               ("parity_bf16", load("unet-parity-bf16.json", None)),
                               ("parity_backward", load("unet-parity-backward.json", None))) if v},
}
result["ok"] = bool(steps) and all(s["rc"] == 0 for s in steps) and \
    all(t["failed"] == 0 for t in tests.values())
with open(dest + ".tmp", "w") as f:
    json.dump(result, f, indent=1)
os.replace(dest + ".tmp", dest)
PY
}

finish() {
  summarise
  echo "gpu-check: done in $(( $(date +%s) - started ))s; $out/gpu-check.json"
  "${python:-python3}" - "$out/gpu-check.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
print("ok:", r["ok"], "| device:", r["device"], "| cuda:", r["cuda_available"])
for k, t in r["tests"].items():
    print(f"tests {k}: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped")
    for f in t["failures"]:
        print("  FAILED", f["test"])
for s in r["steps"]:
    if s["rc"] != 0:
        print("step failed:", s["step"], "rc", s["rc"])
PY
  ok=$("${python:-python3}" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["ok"]))' "$out/gpu-check.json" 2>/dev/null || echo 0)
  [ "$ok" = 1 ] && exit 0 || exit 1
}

# The bundle's checks (see the top of this file): every *_CUDA test of each binary, test_ops' CPU
# tests, the kernel benchmarks' GPU cases and bench_unet.py on the GPU.
run_bundle() {
  local b="$build/bundle" t
  rm -rf "$b"
  mkdir -p "$b"
  # Python's tarfile, not tar: the machine need not have xz.
  step bundle-unpack 120 "$python" -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    t.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))' \
    "$bundle_tar" "$b" || return
  cp "$b/bundle.json" "$work/bundle.json"
  local cuda_dirs
  cuda_dirs="$("$python" -c 'import json,sys; print(":".join(json.load(open(sys.argv[1]))["cuda_lib_dirs"]))' "$work/env.json")"
  export LD_LIBRARY_PATH="$b/lib:$(envget torch_lib):$cuda_dirs:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The tests' fixtures are in this checkout, not where the bundle was built.
  export CONCORD_TEST_SOURCE_DIR="$root" CONCORD_TEST_BINARY_DIR="$b"
  for t in test_ops test_train test_rlhf test_diffusion; do
    step "test-cuda-$t" 300 "$b/bin/$t" --gtest_filter='*_CUDA*' \
      --gtest_output="json:$work/tests-cuda-$t.json"
  done
  # The CPU tests too: the bundle against this machine's LibTorch (~50 s of one core here).
  if [ "$cpu_tests" = 1 ]; then
    for t in test_ops test_train test_rlhf test_diffusion; do
      step "test-cpu-$t" 300 "$b/bin/$t" --gtest_filter='-*_CUDA*' \
        --gtest_output="json:$work/tests-cpu-$t.json"
    done
  fi
  [ "$bench" = 1 ] || return 0
  kernel_benchmarks "$b/bin"
  if [ "$(envget cuda_available)" != True ]; then
    echo "gpu-check: no CUDA device: no U-Net benchmarks"
    return 0
  fi
  # The U-Net on the GPU: the students against SDXL at 1024 x 1024 (latent 128), bf16 as the
  # paper's GPU figures; then Concord against diffusers (when its wheel installs) in fp32 and bf16.
  local unet=("$python" "$root/benchmarks/bench_unet.py" --bin "$b/bin/bench_unet" --device cuda
              --threads "$jobs")
  step unet-students 420 "${unet[@]}" --parts students \
    --students-latent 128 --students-iters 10 --warmup 3 --dtype bf16 \
    --json-out "$work/unet-students.json"
  local wheels=("$deps"/wheels/*.whl)
  if [ -e "${wheels[0]}" ] && "$python" -m pip install -q --no-index --no-deps --no-compile \
       --target "$build/pysite" "${wheels[@]}"; then
    export PYTHONPATH="$build/pysite${PYTHONPATH:+:$PYTHONPATH}"
  fi
  if "$python" -c 'import diffusers' 2>/dev/null; then
    step unet-parity 300 "${unet[@]}" --parts parity --rounds 2 \
      --iters 10 --warmup 3 --parity-latent 128 --json-out "$work/unet-parity.json"
    step unet-parity-bf16 300 "${unet[@]}" --parts parity \
      --rounds 2 --iters 10 --warmup 3 --parity-latent 128 --dtype bf16 \
      --json-out "$work/unet-parity-bf16.json"
    # A training step's model work: forward + backward, the gradients compared with diffusers'.
    step unet-parity-backward 300 "${unet[@]}" --parts parity --rounds 2 \
      --iters 5 --warmup 2 --parity-latent 128 --backward \
      --json-out "$work/unet-parity-backward.json"
  else
    echo "gpu-check: no diffusers here (run --prepare and carry .gpu-deps): no U-Net baseline"
  fi
}

# The kernel benchmarks of bin dir $1: the GPU cases (they print "skipped" without a device), then
# small CPU cases that show the binaries run against this LibTorch. Every JSON line lands in
# bench.jsonl.
kernel_benchmarks() {
  local b="$1"
  bench_step() {
    local name="$1"
    shift
    step "$name" 300 bash -c 'set -o pipefail; "$@" | tee -a "'"$work"'/bench.jsonl"' _ "$@"
  }
  bench_step bench-attention-cuda-bf16 "$b/bench_ops_attention" --device cuda --dtype bfloat16 \
    --seqs 4096 --dim 128 --heads 8 --kv-heads 8 --passes fwd,fwd+bwd,decode --iters 5
  bench_step bench-siaf-cuda-bf16 "$b/bench_ops_siaf" --device cuda --dtype bfloat16 \
    --batch 8 --seq 4096 --channels 2816 --iters 10
  bench_step bench-siaf-cuda-fp32 "$b/bench_ops_siaf" --device cuda --dtype float \
    --batch 8 --seq 4096 --channels 2816 --iters 10
  bench_step bench-shortcut-cuda-bf16 "$b/bench_ops_augmented_shortcut" --device cuda \
    --dtype bfloat16 --rows 16384 --dim 2048 --hidden 64 --branches 1 --iters 10
  bench_step bench-siaf-cpu "$b/bench_ops_siaf" --batch 2 --seq 128 --channels 512 --iters 3
  bench_step bench-attention-cpu "$b/bench_ops_attention" --seqs 256 --rss 0 --iters 2
  bench_step bench-shortcut-cpu "$b/bench_ops_augmented_shortcut" --rows 256 --dim 256 \
    --iters 2 --ew-elements 1048576
}

# 1. The Python whose torch to build against, and what it sees.
if [ -z "$python" ]; then
  for p in python3 python; do command -v "$p" >/dev/null && { python="$p"; break; }; done
fi
step python-env 120 "$python" - "$work/env.json" <<'PY'
import glob, json, os, platform, sys
import torch
env = {
    "python": sys.executable, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
    "cxx11_abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI),
    "cmake_prefix_path": torch.utils.cmake_prefix_path,
    "cuda_available": torch.cuda.is_available(), "host": platform.node(),
    "glibc": platform.libc_ver()[1],
    "cpu_count": os.cpu_count(),
    # Where a program linked against this LibTorch finds it and the CUDA libraries it loads
    # (the wheel's own RUNPATH covers libtorch*.so, not a bundle's binaries).
    "torch_lib": os.path.join(os.path.dirname(torch.__file__), "lib"),
    "cuda_lib_dirs": sorted({os.path.dirname(p) for d in sys.path if os.path.isdir(os.path.join(d, "nvidia"))
                             for p in glob.glob(os.path.join(d, "nvidia", "**", "lib*.so*"), recursive=True)}),
}
if env["cuda_available"]:
    p = torch.cuda.get_device_properties(0)
    env.update(device_name=p.name, capability="%d.%d" % (p.major, p.minor),
               device_memory_gib=round(p.total_memory / 2**30, 1),
               multiprocessors=p.multi_processor_count)
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env, indent=1))
PY
[ -s "$work/env.json" ] || { echo "gpu-check: no usable torch in '$python'"; finish; }
envget() { "$python" -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$work/env.json" "$1"; }
torch_prefix="$(envget cmake_prefix_path)"
abi="$(envget cxx11_abi)"; [ "$abi" = True ] && abi=1 || abi=0
capability="$(envget capability)"

# 2. The bundle, when it was built for this LibTorch.
bundle_tar="$deps/bundle.tar.xz"
if [ "$from_source" = 0 ] && [ -f "$bundle_tar" ] && [ -f "$deps/bundle.json" ]; then
  # The bundle's binaries need its LibTorch and a C library at least as new as the one they were
  # linked against.
  fits="$("$python" - "$deps/bundle.json" "$work/env.json" <<'PY'
import json, sys
bundle, env = (json.load(open(p)) for p in sys.argv[1:3])
version = lambda v: tuple(int(x) for x in v.split(".") if x.isdigit())
if bundle["torch"] != env["torch"]:
    print(f"the bundle is for torch {bundle['torch']}, this machine has {env['torch']}")
elif env.get("glibc") and version(bundle.get("glibc", "0")) > version(env["glibc"]):
    print(f"the bundle needs glibc {bundle['glibc']}, this machine has {env['glibc']}")
PY
)"
  if [ -z "$fits" ]; then
    run_bundle
    finish
  fi
  echo "gpu-check: $fits: building the ops layer from source instead"
fi

nvcc="${CUDACXX:-}"
[ -n "$nvcc" ] || nvcc="$(command -v nvcc || true)"
[ -n "$nvcc" ] || { [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc; }
generator=Ninja
command -v ninja >/dev/null || generator="Unix Makefiles"

# 3. From source. GoogleTest from the carried .deb (or, without one, a system source tree), built
#    with the device's compiler and LibTorch's C++ ABI.
gtest_src=""
gtest_origin=""
debs=("$deps"/debs/*.deb)
if [ -e "${debs[0]}" ]; then
  rm -rf "$build/deps-root"
  mkdir -p "$build/deps-root"
  for d in "${debs[@]}"; do
    if command -v dpkg >/dev/null; then
      dpkg -x "$d" "$build/deps-root"
    else  # a .deb is an ar archive around data.tar.*
      "$python" - "$d" "$build/deps-root" <<'PY'
import io, sys, tarfile
deb, dest = sys.argv[1], sys.argv[2]
data = open(deb, "rb").read()
assert data[:8] == b"!<arch>\n", deb + " is not a .deb"
pos = 8
while pos + 60 <= len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58])
    body = data[pos + 60:pos + 60 + size]
    pos += 60 + size + (size & 1)
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body), mode="r:*").extractall(dest)
PY
    fi
  done
  gtest_src="$build/deps-root/usr/src/googletest"
  gtest_origin="$(cd "$deps/debs" && ls *.deb | tr '\n' ' ')"
elif [ -d /usr/src/googletest ]; then
  gtest_src=/usr/src/googletest
  gtest_origin="system /usr/src/googletest (no .gpu-deps: run scripts/gpu-check.sh --prepare)"
fi
gtest_prefix="$build/deps-prefix"
if [ -z "$gtest_src" ] || [ ! -f "$gtest_src/CMakeLists.txt" ]; then
  echo "gpu-check: no GoogleTest sources: run scripts/gpu-check.sh --prepare and carry .gpu-deps"
  echo '{"step": "googletest", "rc": 1, "seconds": 0}' >> "$work/steps.jsonl"
  finish
fi
if [ ! -f "$gtest_prefix/abi-$abi" ]; then
  step googletest-configure 300 cmake -S "$gtest_src" -B "$build/googletest" -G "$generator" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON \
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi" \
    -DCMAKE_INSTALL_PREFIX="$gtest_prefix" -DCMAKE_INSTALL_LIBDIR=lib &&
  step googletest-build 300 cmake --build "$build/googletest" -j "$jobs" --target install &&
  touch "$gtest_prefix/abi-$abi"
fi
gtest_dir="$gtest_prefix/lib/cmake/GTest"

# 4. Concord's ops layer, its tests and the kernel benchmarks.
arch_args=()
[ -n "$capability" ] && arch_args=(-DTORCH_CUDA_ARCH_LIST="$capability")  # this GPU only
cuda_args=(-DCONCORD_CUDA=OFF)
[ -n "$nvcc" ] && cuda_args=(-DCONCORD_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
cat > "$work/build.json" <<EOF
{"build_dir": "$build", "generator": "$generator", "nvcc": "$nvcc", "jobs": $jobs,
 "torch_cuda_arch_list": "${capability:-default}", "googletest": "$gtest_origin",
 "gtest_dir": "$gtest_dir", "cxx11_abi": $abi}
EOF
step configure 300 cmake -S "$root" -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=Release \
  -DCONCORD_OPS_ONLY=ON "${cuda_args[@]}" "${arch_args[@]}" \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DGTest_DIR="$gtest_dir" || finish
step build 1500 cmake --build "$build" -j "$jobs" --target test_ops bench_ops_siaf \
  bench_ops_attention bench_ops_augmented_shortcut || finish

# 5. Tests: the *_CUDA ones (each backend against the CPU result), then the rest.
step test-cuda 600 "$build/tests/test_ops" --gtest_filter='*_CUDA*' \
  --gtest_output="json:$work/tests-cuda-test_ops.json"
if [ "$cpu_tests" = 1 ]; then
  step test-cpu 900 "$build/tests/test_ops" --gtest_filter='-*_CUDA*' \
    --gtest_output="json:$work/tests-cpu-test_ops.json"
fi

# 6. Benchmarks: the kernels' GPU cases, then small CPU ones.
[ "$bench" = 1 ] && kernel_benchmarks "$build/benchmarks"

finish
