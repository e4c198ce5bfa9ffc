// Internal: a validated decode call (shared by the kernel and the reference) — shapes,
// the resolved mask, and each sequence's visible keys cut into tiles.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "attnkit/decode.hpp"
#include "kernels/decode_micro.hpp"

namespace attnkit::decode {

struct Tile {
  int64_t lo, hi;  // logical key indices [lo, hi), one storage format, <= kTileKeys keys
};

struct Plan {
  int64_t B = 0, Hq = 0, Hkv = 0, g = 0, nq = 0, dk = 0, dv = 0, rows = 0;
  int64_t window = 0, sinks = 0;  // resolved (rolling defaults applied)
  float scale = 1, softcap = 0;
  std::vector<double> alibi;  // [Hq] ALiBi slopes, or empty
  std::vector<const KvSequence*> seqs;
  std::vector<std::vector<Tile>> tiles;  // [B]

  // Query t (of nq) of sequence b sees key i (bottom-right causal, window, sinks).
  bool visible(int64_t held, int64_t i, int64_t t) const {
    const int64_t qi = held - nq + t;
    return i <= qi && (window == 0 || qi - i < window || i < sinks);
  }
  // Every query row of sequence b sees every key of the tile.
  bool full(int64_t held, const Tile& tile) const {
    const int64_t qlo = held - nq, qhi = held - 1;
    return tile.hi - 1 <= qlo && (window == 0 || tile.hi <= sinks || qhi - tile.lo < window);
  }
};

// Validates every argument (Error naming it) and builds the plan.
Plan make_plan(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
               const MutTensorView& out, const DecodeOptions& opts, const MutTensorView& lse);

}  // namespace attnkit::decode
