#!/usr/bin/env bash
# The main job: installs what the library and CLI need (no test toolchain), builds the CLI,
# and runs the default benchmark / trade-off report on built-in defaults. Extra arguments
# go to `attnkit bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DATTNKIT_TESTS=OFF -DATTNKIT_BENCH=OFF -DATTNKIT_FUZZ=OFF >/dev/null
cmake --build build -j"$(nproc)" --target attnkit_cli
exec build/attnkit bench --quick "$@"
