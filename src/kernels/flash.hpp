// Internal interface of the flash forward kernel: the SIMD tile operations (flash_simd.cpp,
// compiled once per Highway target and dispatched at run time) and the driver
// (flash_fwd.cpp) that walks tiles, packs queries and merges split-KV partials.
//
// Layout ("transposed" tiles). A query tile packs R rows: the g query heads that share a
// KV head times Bm query positions, r = head_in_group * Bm + position_in_tile, padded to
// Rp (a multiple of the row block). Tiles are stored row-minor so SIMD lanes run over
// query rows:
//   Qt [Dqk][Rp]   queries, pre-multiplied by the softmax scale
//   St [Bc][Rp]    scores of one KV tile, then (in place) the probabilities P
//   Ot [Dv][Rp]    the running, unnormalised output
//   m, l [Rp]      running max and running sum per row
// With lanes along rows, the online-softmax max and sum are element-wise across the Bc
// key rows, and K[j][c], V[j][c] are broadcast straight from the caller's memory.
#pragma once

#include <algorithm>
#include <cstdint>

namespace attnkit::flash {

// Bc: keys per KV tile. Measured with packed_rows = 64 (GFLOP/s, 2 threads, while another
// job loaded the machine, so only the ratios mean anything):
//   Bc                     32     64    128
//   causal f32 4096 32/8   78.6   81.2   90.3
//   window:512 f32 16K     73.0   75.0   74.3
//   causal bf16 4096 32/8  118.9  140.9  149.4
// 128 gains a few percent on causal but doubles St (32 KiB at 64 rows), crowding Qt out of
// L1 for d = 128 and widening the masked edge of bands; 64 is kept.
constexpr int64_t kBlockKeys = 64;

// K and V rows of one tile, in f32: key j's row starts at k + j * k_stride.
struct KvRows {
  const float* k;
  int64_t k_stride;
  const float* v;
  int64_t v_stride;
  int64_t width;  // keys in this tile (<= kBlockKeys)
};

// Per-row data of the mask of a Partial tile: `levels` half-open intervals per row,
// lo[t * rp + r] .. hi[t * rp + r], in key offsets from the tile's first visible key.
// Every visible key of the tile lies in [k0 + offset, k0 + offset + width) (offset a
// multiple of 4), so a kernel computes only those columns: a tile whose rows see only a
// few global keys, or the two edges of a band, costs its visible span, not Bc keys.
struct TileMask {
  const float* lo;
  const float* hi;
  int64_t levels;
  int64_t offset = 0;
  int64_t width = 0;  // 0: no row sees any key of the tile
};

// Score modifiers, applied to scaled scores in natural units.
struct ScoreMods {
  float softcap = 0;             // c > 0: s = c * tanh(s / c)
  const float* alibi = nullptr;  // [Rp] ALiBi slope per row, or null: s -= slope |pos - j|
  const float* pos = nullptr;    // [Rp] query position minus the tile's first key
};

struct SimdOps {
  // Rows per SIMD vector for the compiled target (16 for f32 on AVX-512).
  int64_t (*lanes)();
  // St[j][r] = sum_c K[j][c] Qt[c][r] for j < width; rows up to width rounded up to 4 are
  // written (with zero keys), later rows are not.
  void (*scores)(const float* qt, int64_t rp, int64_t dqk, const KvRows& kv, float* st);
  void (*apply_mods)(float* st, int64_t rp, int64_t width, const ScoreMods& mods);
  void (*apply_mask)(float* st, int64_t rp, int64_t width, const TileMask& mask);
  // m_new = max(m, max_j St); alpha = e^(m - m_new); St = e^(St - m_new);
  // l = alpha l + sum_j St; m = m_new. Rows with no finite score keep m = -inf, P = 0.
  void (*online_softmax)(float* st, int64_t rp, int64_t width, float* m, float* l, float* alpha);
  // Ot[c][r] = alpha[r] Ot[c][r] + sum_j V[j][c] Pt[j][r].
  void (*accumulate)(float* ot, int64_t rp, int64_t dv, const float* alpha, const float* pt, const KvRows& kv);
  // Whether any of `rows` rows of `dim` values, row j at x + j * stride, holds inf or NaN:
  // f32, or 16-bit floats whose exponent field is `exponent` (0x7F80 bf16, 0x7C00 f16).
  bool (*any_nonfinite_f32)(const float* x, int64_t stride, int64_t rows, int64_t dim);
  bool (*any_nonfinite_16)(const uint16_t* x, int64_t stride, int64_t rows, int64_t dim, uint16_t exponent);
  // dst[i] = float(src[i]) for bf16 / f16 sources (bit patterns in uint16).
  void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
  const char* target;  // Highway target name, e.g. "AVX3"
};

// The ops of the best target Highway's dispatch picks now (honours hwy::DisableTargets).
SimdOps simd_ops();

}  // namespace attnkit::flash

#include "attnkit/attention.hpp"

namespace attnkit::flash {

// Tuning knobs; defaults are what the benchmarks chose (see flash_fwd.cpp).
struct FlashConfig {
  // Target query rows per tile (g heads x Bm positions). Measured on this project's
  // machine (2 threads, f32, d = 128, GFLOP/s on visited pairs; +-5% noise):
  //   rows            32    64   128   256
  //   causal 4096    166   174   159   182   (Hq = 32, Hkv = 8)
  //   window:512 16K 152   164   134   122   (Hq = Hkv = 8)
  // Larger tiles amortise packing but waste work on the Partial tiles at a band's edges;
  // 64 is the compromise. Bc = 64 keys (kBlockKeys) keeps St at 16 KiB and, with Qt at
  // 32 KiB for d = 128, the working set of scores() inside L1 + L2.
  int64_t packed_rows = 64;
  // Split-KV: when fewer than this many (batch, kv head, query tile) items exist, each
  // item's key tiles are split into chunks merged by LSE. Depends on the shape only, so
  // results are bitwise identical whatever the thread count.
  int64_t min_work_items = 32;
};

// How query rows are packed into tiles, the same in the forward and the backward: a tile
// holds `heads` query heads of one KV head's group at `bm` consecutive positions. A group
// larger than a tile (e.g. MQA with 128 query heads) is split across `chunks` tiles, so
// the workspace stays a few tiles whatever Hq / Hkv is.
struct TileGeometry {
  int64_t group, heads, chunks;  // query heads per KV head; packed per tile; tiles per group
  int64_t bm, rows, rp;          // query positions per tile; packed rows; rows padded to lanes
  int64_t q_tiles;
};

inline TileGeometry tile_geometry(const AttnShape& s, int64_t packed_rows, int64_t lanes) {
  TileGeometry g{};
  g.group = s.group();
  g.heads = std::min(g.group, std::max<int64_t>(packed_rows, 1));
  g.chunks = (g.group + g.heads - 1) / g.heads;
  g.bm = std::clamp<int64_t>(packed_rows / g.heads, 1, std::max<int64_t>(s.q_len, 1));
  g.rows = g.heads * g.bm;
  g.rp = (g.rows + lanes - 1) / lanes * lanes;
  g.q_tiles = (s.q_len + g.bm - 1) / g.bm;
  return g;
}

// The flash forward kernel behind attend(); arguments as attend_into().
void flash_forward(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                   const MutTensorView& o, const MutTensorView& lse, const FlashConfig& config = {});

}  // namespace attnkit::flash

namespace attnkit::flash {

// Native bf16 dot products (AVX-512 BF16, vdpbf16ps) for bf16 Q, K, V: two bf16 products
// accumulate into each f32 lane, so the unit of work is a pair along the reduction axis.
//   Qt2 [ceil(Dqk/2)][Rp][2]  query pairs (Q[r][2c], Q[r][2c+1]), unscaled bf16
//   P2  [Bc/2][Rp][2]         probability pairs along keys, rounded to bf16 (as
//                             FlashAttention does before its PV product)
//   V2  [Bc/2][Dv][2]         value pairs along keys
// The scale is applied to S in f32, so Q keeps its exact bf16 values.
struct Bf16Ops {
  bool available = false;  // the CPU has avx512bf16 and AVX-512 is not disabled
  // St[j][r] = scale * sum_c K[j][c] Q[r][c]; k rows are bf16 with row stride k_stride.
  void (*scores)(const uint16_t* qt2, int64_t rp, int64_t dqk, const uint16_t* k, int64_t k_stride, int64_t width,
                 float scale, float* st) = nullptr;
  // Ot[c][r] = alpha[r] Ot[c][r] + sum_j V[j][c] P[j][r]; scratch holds P2 and V2
  // (kBlockKeys * (Rp + Dv + 1) uint16).
  void (*accumulate)(float* ot, int64_t rp, int64_t dv, const float* alpha, const float* pt, const uint16_t* v,
                     int64_t v_stride, int64_t width, uint16_t* scratch) = nullptr;
};

Bf16Ops bf16_ops();

}  // namespace attnkit::flash
