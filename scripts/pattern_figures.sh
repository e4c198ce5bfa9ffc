#!/usr/bin/env bash
# Regenerates the pattern figures of docs/patterns.md (docs/img/pattern_*.png) with
# `attnkit pattern`. Usage: scripts/pattern_figures.sh [path/to/attnkit] (default build/attnkit).
# Not for: benchmark plots (those come from bench/ JSON through matplotlib).
set -euo pipefail
cd "$(dirname "$0")/.."
attnkit=${1:-build/attnkit}
out=docs/img
mkdir -p "$out"

fig() {  # fig NAME N PATTERN [extra attnkit options...]
  local name=$1 n=$2 pattern=$3
  shift 3
  "$attnkit" pattern --pattern "$pattern" --n "$n" --png "$out/pattern_$name.png" "$@" > /dev/null
  echo "$out/pattern_$name.png  <-  attnkit pattern --pattern $pattern --n $n${*:+ $*}"
}

# Longformer, Fig. 2: full, sliding window, dilated sliding window, global + sliding window.
fig full 32 none
fig longformer_window 32 longformer:w=3
fig longformer_dilated 32 longformer:w=3,d=2
fig longformer_global 32 longformer:w=3,global=0+1+20
# BigBird, Fig. 1: random, window, global, combined (blocks of 2 over 16 x 16 blocks).
fig bigbird_random 32 bigbird:block=2,window=1,global=0,random=2,seed=3
fig bigbird_window 32 bigbird:block=2,window=3,global=0,random=0
fig bigbird_global 32 bigbird:block=2,window=1,global=2,random=0
fig bigbird 32 bigbird:block=2,window=3,global=2,random=2,seed=3
# Sparse Transformer, Fig. 3: strided and fixed (causal, as in the paper); plain causal.
fig strided 32 strided:stride=4
fig fixed 32 fixed:stride=4,c=1
fig causal 32 causal
fig causal_window 32 window:5,0
# What a tiled kernel visits: Full tiles dark, Partial tiles orange (allowed pairs darker),
# Empty tiles white.
fig causal_tiles 4096 causal --tiles 64
fig longformer_tiles 4096 longformer:w=384,global=0+1+2048 --tiles 256 --size 512
