#!/usr/bin/env bash
# Installs the Debian packages attnkit builds and tests with. Idempotent: asks apt
# only for what is missing, so a second run needs no network.
set -euo pipefail
pkgs=(cmake g++ make clang libclang-rt-14-dev libomp-dev libhwy-dev libcli11-dev nlohmann-json3-dev
      libfmt-dev libpng-dev libgtest-dev libgmock-dev googletest libbenchmark-dev python3)
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
