#!/usr/bin/env bash
# Installs the Debian packages attnkit needs. Idempotent: asks apt only for what is missing,
# so a second run needs no network.
#   scripts/setup.sh             everything: library, CLI, tests, benchmarks, fuzzing (test.sh)
#   scripts/setup.sh --runtime   only what the library and the CLI build with (run.sh)
set -euo pipefail
# OpenBLAS in its OpenMP build: its GEMMs share the kernels' OpenMP threads instead of
# starting a second pool of their own (no oversubscription).
# python3-matplotlib draws the trade-off report's plots (scripts/plot_report.py).
runtime=(cmake g++ make libhwy-dev libfmt-dev nlohmann-json3-dev libpng-dev libcli11-dev libopenblas-openmp-dev
         curl ca-certificates openssl python3 python3-matplotlib)
testing=(clang libclang-rt-14-dev libomp-dev libgtest-dev libgmock-dev googletest libbenchmark-dev
         python3 pkg-config)
case "${1:-}" in
  "") pkgs=("${runtime[@]}" "${testing[@]}") ;;
  --runtime) pkgs=("${runtime[@]}") ;;
  *) echo "usage: scripts/setup.sh [--runtime]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The text corpus the model trains on (cached; no network once fetched).
bash "$(dirname "$0")/fetch_corpus.sh" >/dev/null
