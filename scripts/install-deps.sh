#!/usr/bin/env bash
# Installs what Concord needs to build, test and run on Debian 12. Idempotent: a second run
# only checks. Heavy optional installs (a pip torch for fixtures/benchmarks) live in
# scripts/python-env.sh under ~/.cache so a fresh clone reuses them.
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread libopenblas0-openmp libgloo-dev
  nlohmann-json3-dev libspdlog-dev libfmt-dev libeigen3-dev libcli11-dev
  libpcre2-dev libsentencepiece-dev libicu-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libplplot-dev plplot-driver-cairo
  libpng-dev libjpeg62-turbo-dev libcairo2-dev fonts-dejavu-core
  fortunes  # English text for the pangu_ablation experiment (configs/runs/pangu_ablation.json)
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all Debian packages present"
fi
