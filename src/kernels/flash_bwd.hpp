// Internal interface of the flash backward kernel: its SIMD tile operations
// (flash_bwd_simd.cpp, per Highway target) and the driver (flash_bwd.cpp).
//
// The backward reuses the forward's layouts and products (flash.hpp): lanes run along the
// packed query rows of a tile, so S = K Qt and dP = V dOt are the forward's scores(), and
// dQt = K^T dSt is its accumulate(). The two products that reduce over query rows,
// dV += P^T dO and dK += dS^T Q, are scores() again with the roles turned: the reduction
// runs over the Rp packed rows of row-major dO / Q tiles ([Rp][Dv'] / [Rp][Dqk'], widths
// padded to whole vectors), and the lanes over channels.
//
// Order and determinism. A work item owns a block of KV tiles (batch, KV head, a few
// tiles of Bc keys) and walks the query tiles that visit them, keeping dK and dV for its
// keys in its workspace; dQ of a query tile receives one contribution from each block that
// visits it, and adds them in increasing block order (a turn counter per query tile), so
// the sum is the same whatever the thread count. Items are taken in KV-tile-major order, so the
// item with the lowest index never waits: no deadlock, and with several heads the threads
// rarely meet on one query tile.
#pragma once

#include <cstdint>

#include "attnkit/attention.hpp"

namespace attnkit::flash {

// Per-row data of a backward tile step, [Rp] each.
struct BwdRows {
  const float* lse;  // the forward's LSE; +inf for rows without gradient (padding, no key)
  const float* d;    // D = rowsum(dO o O)
};

struct BwdSimdOps {
  // Pt[j][r] = e^(St[j][r] - lse[r]) for j < width (0 where St is -inf or lse +inf).
  void (*probabilities)(const float* st, int64_t rp, int64_t width, const float* lse, float* pt);
  // dSt[j][r] = Pt[j][r] (dPt[j][r] - D[r]) mods'(St[j][r]), in place of dPt; 0 where the
  // pattern hides the key (St = -inf) or the row has no gradient. softcap > 0: mods' =
  // 1 - (capped / c)^2 with capped = St + slope[r] |pos[r] - j| (the score before ALiBi).
  void (*score_grads)(const float* st, const float* pt, float* dpt, int64_t rp, int64_t width, const BwdRows& rows,
                      float softcap, const float* slopes, const float* pos);
  // dst[i] += src[i] for i < n (n a multiple of the lanes; both aligned).
  void (*add)(float* dst, const float* src, int64_t n);
};

BwdSimdOps bwd_simd_ops();

struct FlashBwdConfig {
  // Query rows per tile (g heads x Bm positions), as the forward's packed_rows.
  int64_t packed_rows = 64;
  // KV tiles per work item (at most 8): each query tile an item visits is packed once and
  // its dQ contribution added once for this many KV tiles (8: 7-11 % faster than 4 on
  // causal n = 4096, Zen 5).
  int64_t kv_tiles_per_item = 8;
  // false: dQ contributions are added in whatever order threads reach them (a lock per
  // query tile), the fastest schedule; kept only to measure what determinism costs.
  bool deterministic = true;
};

// The flash backward behind attend_backward(); arguments as attend_backward_into().
void flash_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                    const TensorView& lse, const TensorView& d_o, const AttendOptions& opts, const MutTensorView& dq,
                    const MutTensorView& dk, const MutTensorView& dv, const MutTensorView& dsink,
                    const FlashBwdConfig& config = {});

}  // namespace attnkit::flash
