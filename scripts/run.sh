#!/usr/bin/env bash
# The main job: installs what the library, the CLI and the plots need (no test toolchain),
# builds the CLI, and writes the quick trade-off report (attnkit report --quick): one small
# model per attention variant trained on the Brown corpus, evaluated with every cache kind,
# tables in report-quick/README.md and PNG plots beside it. Trained models are cached
# (~/.cache/attnkit/report), so a second run only re-evaluates. Extra arguments go to
# `attnkit report` (e.g. --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DATTNKIT_TESTS=OFF -DATTNKIT_BENCH=OFF -DATTNKIT_FUZZ=OFF >/dev/null
cmake --build build -j"$(nproc)" --target attnkit_cli
build/attnkit report --quick "$@"
