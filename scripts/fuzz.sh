#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time.
#   scripts/fuzz.sh [seconds per target, default 60] [target names...]
# Corpora grow in fuzz/corpus/<target>/ (seed files are committed); a crash lands in
# build-fuzz/crashes/<target>/ and should become a regression test in tests/<module>/.
# CONCORD_BUILD_LOCK=FILE holds flock(1) on FILE while configuring and building (not while
# fuzzing), for machines where several checkouts share the cores; CONCORD_FUZZ_NO_BUILD=1 runs
# the targets already in build-fuzz/ as they are.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
shift || true
build="$root/build-fuzz"
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$root"/fuzz/fuzz_*.cpp; do targets+=("$(basename "${f%.cpp}")"); done
fi
if [[ -z "${CONCORD_FUZZ_NO_BUILD:-}" ]]; then
  "$root/scripts/install-deps.sh"
  lock=()
  [[ -n "${CONCORD_BUILD_LOCK:-}" ]] && lock=(flock "$CONCORD_BUILD_LOCK")
  CC=clang CXX=clang++ "${lock[@]}" cmake -S "$root" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCONCORD_CUDA=OFF -DCONCORD_BUILD_TESTS=OFF \
    -DCONCORD_BUILD_BENCHMARKS=OFF -DCONCORD_BUILD_EXAMPLES=OFF -DCONCORD_BUILD_FUZZERS=ON >/dev/null
  "${lock[@]}" cmake --build "$build" --target "${targets[@]}"
fi
status=0
for t in "${targets[@]}"; do
  corpus="$root/fuzz/corpus/${t#fuzz_}"
  crashes="$build/crashes/$t"
  mkdir -p "$corpus" "$crashes"
  work="$(mktemp -d)"
  dict=()
  [[ -f "$root/fuzz/${t#fuzz_}.dict" ]] && dict=(-dict="$root/fuzz/${t#fuzz_}.dict")
  echo "=== $t: ${seconds}s ==="
  # New corpus entries go to a scratch folder: the committed seeds stay small and reviewed.
  # UBSan reports (a signed overflow, a division by zero) stop the run and leave a crash file.
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
      "$build/fuzz/$t" -max_total_time="$seconds" -rss_limit_mb=2048 \
      -timeout=10 -artifact_prefix="$crashes/" -print_final_stats=1 "${dict[@]}" "$work" "$corpus" 2>&1 |
      grep -E "^#[0-9]+.*DONE|ERROR|SUMMARY|stat::number_of_executed_units|Done [0-9]+ runs"; then
    :
  fi
  if compgen -G "$crashes/*" >/dev/null; then
    echo "$t: crashes found in $crashes" >&2
    status=1
  fi
  rm -rf "$work"
done
exit $status
