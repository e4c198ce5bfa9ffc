// The flash backward kernel's driver: FlashAttention 2's backward on the CPU. Each work item
// owns one KV tile and walks the query tiles that visit it (the pattern's tile columns;
// Empty tiles are never touched), recomputing S and P = e^(S - LSE) from the forward's LSE,
// so no Nq x Nkv matrix exists. Per tile step:
//   S = K Qt, P, dP = V dOt, dS = P (dP - D) mods', dV += P^T dO, dK += dS^T Q, dQ += dS K
// dK and dV stay in the item's workspace until its last step; dQ contributions are added in
// KV-tile order (flash_bwd.hpp). The arithmetic is flash_simd.cpp's and flash_bwd_simd.cpp's.
#include "kernels/flash_bwd.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <hwy/aligned_allocator.h>

#include "attnkit/backward.hpp"
#include "kernels/flash.hpp"
#include "kernels/online_softmax.hpp"
#include "kernels/tile_mask.hpp"

namespace attnkit::flash {

namespace {

using softmax::kNegInf;
constexpr float kPosInf = std::numeric_limits<float>::infinity();

struct Plan : TileGeometry {
  AttnShape s;
  BoundPattern pattern;
  int64_t kv_tiles;
  int64_t kb, kv_blocks;    // KV tiles per work item, and items per (batch, KV head)
  int64_t dqk_pad, dv_pad;  // head widths padded to whole vectors (row-major Q and dO tiles)
  TileRows by_query;        // for the order of dQ's contributions
  TileColumns by_kv;        // what an item walks
  float scale;
};

struct Item {
  int64_t b, hk, kv_block;  // KV tiles [kv_block * kb, (kv_block + 1) * kb)
};

// A query tile that visits an item's KV block: the class of each of the block's tiles.
struct BlockVisit {
  int64_t q_tile;
  TileClass cls[8];  // Empty where the query tile skips that KV tile
};

template <class T>
hwy::AlignedFreeUniquePtr<T[]> alloc(int64_t n) {
  auto ptr = hwy::AllocateAligned<T>(static_cast<size_t>(std::max<int64_t>(n, 1)));
  if (!ptr) throw std::bad_alloc();
  std::fill(ptr.get(), ptr.get() + std::max<int64_t>(n, 1), T{0});
  return ptr;
}

// Per-thread buffers: a few tiles, independent of the sequence lengths.
struct Workspace {
  hwy::AlignedFreeUniquePtr<float[]> qt, qr, dot, dor;  // Qt [Dqk][Rp] (scaled), Q [Rp][Dqk'], dOt, dO
  hwy::AlignedFreeUniquePtr<float[]> st, pt, dpt;       // S, P, dP then dS: [Bc][Rp]
  hwy::AlignedFreeUniquePtr<float[]> lse, d, pos, pos_rel, slopes, ones;  // [Rp]
  hwy::AlignedFreeUniquePtr<float[]> k_rows, v_rows, k_clean;  // the item's K, V as f32 [Bc][D]
  hwy::AlignedFreeUniquePtr<float[]> dk_acc, dv_acc, tmp, dqt;  // [Bc][Dqk'], [Bc][Dv'], product, [Dqk][Rp]
  std::vector<float> row;  // one input row as f32
  std::vector<int64_t> bad_k, bad_q, bad_do;
  TileMaskBuilder masks;  // of the visiting query tile's Partial tiles
  std::vector<QTileRef> column;
  std::vector<TileRef> line;
  std::vector<BlockVisit> visits;

  explicit Workspace(const Plan& p) : masks(p.bm, p.heads, p.rp) {
    const AttnShape& s = p.s;
    qt = alloc<float>(s.d_qk * p.rp);
    qr = alloc<float>(p.rp * p.dqk_pad);
    dot = alloc<float>(s.d_v * p.rp);
    dor = alloc<float>(p.rp * p.dv_pad);
    st = alloc<float>(kBlockKeys * p.rp);
    pt = alloc<float>(kBlockKeys * p.rp);
    dpt = alloc<float>(kBlockKeys * p.rp);
    for (auto* x : {&lse, &d, &pos, &pos_rel, &slopes, &ones}) *x = alloc<float>(p.rp);
    std::fill(ones.get(), ones.get() + p.rp, 1.0f);
    const int64_t keys = p.kb * kBlockKeys;
    k_rows = alloc<float>(keys * s.d_qk);
    v_rows = alloc<float>(keys * s.d_v);
    k_clean = alloc<float>(kBlockKeys * s.d_qk);
    dk_acc = alloc<float>(keys * p.dqk_pad);
    dv_acc = alloc<float>(keys * p.dv_pad);
    tmp = alloc<float>(kBlockKeys * std::max(p.dqk_pad, p.dv_pad));
    dqt = alloc<float>(s.d_qk * p.rp);
    row.resize(static_cast<size_t>(std::max(s.d_qk, s.d_v)));
  }
};

// Row (b, h, i) of a [B, H, N, D] view as f32: where it lies when the view is contiguous
// f32, else converted into scratch [D]. finite: whether every value is finite.
const float* row_f32(const SimdOps& ops, const TensorView& t, int64_t b, int64_t h, int64_t i, float* scratch,
                     bool& finite) {
  const int64_t dim = t.size(3), off = t.offset(b, h, i, 0);
  const float* row = scratch;
  if (t.stride(3) == 1 && t.dtype() == DType::f32) {
    row = static_cast<const float*>(t.data()) + off;
  } else if (t.stride(3) == 1 && t.dtype() == DType::bf16) {
    ops.bf16_to_f32(static_cast<const uint16_t*>(t.data()) + off, scratch, dim);
  } else if (t.stride(3) == 1 && t.dtype() == DType::f16) {
    ops.f16_to_f32(static_cast<const uint16_t*>(t.data()) + off, scratch, dim);
  } else {
    for (int64_t c = 0; c < dim; ++c) scratch[c] = static_cast<float>(t.load(off + c * t.stride(3)));
  }
  finite = !ops.any_nonfinite_f32(row, dim, 1, dim);
  return row;
}

// The same row copied into out [D]; false when a value is not finite.
bool load_row(const SimdOps& ops, const TensorView& t, int64_t b, int64_t h, int64_t i, float* out) {
  bool finite = false;
  const float* row = row_f32(ops, t, b, h, i, out, finite);
  if (row != out) std::memcpy(out, row, static_cast<size_t>(t.size(3)) * sizeof(float));
  return finite;
}

// The packed rows of one visit of a query tile: positions [q0, q0 + bm) for each of the
// plan's heads, `rows` of them, padded to rp. Normally the whole tile; a visit whose tiles
// are all Partial packs only the positions that see one of its keys (visit_rows).
struct VisitRows {
  int64_t q_tile, q0, bm, rows, rp;
};

// The query head and position of packed row r (chunk ch of KV head hk's group); false for
// padding rows.
bool row_of(const Plan& p, const VisitRows& vr, int64_t hk, int64_t ch, int64_t r, int64_t& h, int64_t& i) {
  h = hk * p.group + ch * p.heads + r / vr.bm;
  i = vr.q0 + r % vr.bm;
  return r < vr.rows && h < (hk + 1) * p.group && i < p.s.q_len;
}

// D = rowsum(dO o O) for every row, [B][Hq][Nq], and the learned sinks' gradient
// dsink[h] = -sum_{b, i} e^(z[h] - LSE) D (summed in batch, then position order).
std::vector<float> row_dots(const Plan& p, const SimdOps& ops, const TensorView& o, const TensorView& lse,
                            const TensorView& d_o, const AttendOptions& opts, const MutTensorView& dsink) {
  const AttnShape& s = p.s;
  std::vector<float> d(static_cast<size_t>(s.batch * s.q_heads * s.q_len));
  std::vector<double> sink_terms(static_cast<size_t>(s.batch * s.q_heads), 0.0);
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h) {
      std::vector<float> orow(static_cast<size_t>(s.d_v)), grow(static_cast<size_t>(s.d_v));
      double sink = 0;
      for (int64_t i = 0; i < s.q_len; ++i) {
        bool finite = false;
        const float* orow_f = row_f32(ops, o, b, h, i, orow.data(), finite);
        const float* grow_f = row_f32(ops, d_o, b, h, i, grow.data(), finite);
        double acc = 0;
        for (int64_t c = 0; c < s.d_v; ++c) acc += double(orow_f[c]) * double(grow_f[c]);
        d[static_cast<size_t>((b * s.q_heads + h) * s.q_len + i)] = static_cast<float>(acc);
        if (opts.has_sinks()) sink -= std::exp(opts.sink_logits[static_cast<size_t>(h)] - lse.get(b, h, i)) * acc;
      }
      sink_terms[static_cast<size_t>(b * s.q_heads + h)] = sink;
    }
  if (dsink.rank() != 0)
    for (int64_t h = 0; h < s.q_heads; ++h) {
      double total = 0;
      for (int64_t b = 0; b < s.batch; ++b) total += sink_terms[static_cast<size_t>(b * s.q_heads + h)];
      dsink.set(total, h);
    }
  return d;
}

// Packs the visit's rows (chunk ch) of (b, hk): Q scaled as Qt and row-major Q, dO as dOt and
// row-major dO, and the rows' LSE, D, positions and slopes. Lists rows with non-finite Q / dO.
// Columns past d_qk / d_v of the row-major tiles stay zero from the workspace's allocation.
void pack_rows(const Plan& p, const SimdOps& ops, const TensorView& q, const TensorView& lse, const TensorView& d_o,
               const std::vector<float>& dvec, const AttendOptions& opts, int64_t b, int64_t hk, int64_t ch,
               const VisitRows& vr, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t rp = vr.rp;
  w.bad_q.clear();
  w.bad_do.clear();
  for (int64_t r = 0; r < rp; ++r) {
    int64_t h, i;
    const bool valid = row_of(p, vr, hk, ch, r, h, i);
    w.pos[r] = static_cast<float>(i + s.causal_offset());
    w.slopes[r] = valid && !opts.alibi_slopes.empty() ? static_cast<float>(opts.alibi_slopes[size_t(h)]) : 0.0f;
    w.lse[r] = kPosInf;
    w.d[r] = 0;
    if (!valid) {  // every row is written, so the tiles need no clearing per visit
      for (int64_t c = 0; c < s.d_qk; ++c) w.qt[c * rp + r] = w.qr[r * p.dqk_pad + c] = 0.0f;
      for (int64_t c = 0; c < s.d_v; ++c) w.dot[c * rp + r] = w.dor[r * p.dv_pad + c] = 0.0f;
      continue;
    }
    const float l = static_cast<float>(lse.get(b, h, i));
    w.lse[r] = l == kNegInf ? kPosInf : l;  // no key and no sink: no gradient
    w.d[r] = dvec[static_cast<size_t>((b * s.q_heads + h) * s.q_len + i)];
    bool finite = false;
    const float* row = row_f32(ops, q, b, h, i, w.row.data(), finite);
    if (!finite) w.bad_q.push_back(r);
    for (int64_t c = 0; c < s.d_qk; ++c) {
      const float x = row[c] * p.scale;
      w.qt[c * rp + r] = x;
      w.qr[r * p.dqk_pad + c] = x;
    }
    row = row_f32(ops, d_o, b, h, i, w.row.data(), finite);
    if (!finite) w.bad_do.push_back(r);
    for (int64_t c = 0; c < s.d_v; ++c) {
      w.dot[c * rp + r] = row[c];
      w.dor[r * p.dv_pad + c] = row[c];
    }
  }
}

// dQ rows in f32, where the contributions are summed: dq itself when it is contiguous f32.
struct DqAccumulator {
  float* base;
  int64_t sb, sh, si;  // strides of batch, head and position (channels contiguous)
  float* row(int64_t b, int64_t h, int64_t i) const { return base + b * sb + h * sh + i * si; }
};

// Orders the dQ contributions of each query tile: turn[t] counts those added so far, and
// the contribution of rank n (its KV tile's place in the query tile's row) waits for n.
class DqTurns {
 public:
  DqTurns(int64_t tiles, bool deterministic)
      : turn_(new std::atomic<int32_t>[static_cast<size_t>(std::max<int64_t>(tiles, 1))]),
        deterministic_(deterministic) {
    for (int64_t t = 0; t < std::max<int64_t>(tiles, 1); ++t) turn_[t].store(0, std::memory_order_relaxed);
  }
  // Runs add() when it is contribution `rank`'s turn on tile t (or, not deterministic,
  // when no other thread is adding to t). Gives up when stop is set.
  template <class Add>
  void add_in_turn(int64_t t, int32_t rank, const std::atomic<bool>& stop, Add&& add) {
    std::atomic<int32_t>& x = turn_[t];
    if (deterministic_) {
      while (x.load(std::memory_order_acquire) != rank) wait(stop);
      add();
      x.store(rank + 1, std::memory_order_release);
      return;
    }
    int32_t expected = 0;
    while (!x.compare_exchange_weak(expected, 1, std::memory_order_acquire)) {
      expected = 0;
      wait(stop);
    }
    add();
    x.store(0, std::memory_order_release);
  }

 private:
  // A pause, and now and then a yield: with more threads than free cores (tests side by
  // side) the thread whose turn it is may need this core.
  static void wait(const std::atomic<bool>& stop) {
    if (stop.load(std::memory_order_relaxed)) throw std::runtime_error("stopped");
    thread_local uint32_t spins = 0;
    if (++spins % 64 == 0) std::this_thread::yield();
    _mm_pause();
  }
  std::unique_ptr<std::atomic<int32_t>[]> turn_;
  bool deterministic_;
};

struct Inputs {
  const TensorView &q, &k, &v, &lse, &d_o;
  const AttendOptions& opts;
  const std::vector<float>& d;  // D per row
};

// The slow part of a Partial step whose tile holds non-finite K, Q or dO rows: those rows
// were left out of the products (0 times inf is NaN, which would reach rows and keys that
// do not see them); their terms are added here to the pairs the pattern admits (asked of
// the pattern, not read from S: a score of -inf from the data is still a pair, and its
// 0 * inf is the plain formula's NaN). k, dk, dv: the tile's rows of the item's buffers.
void add_nonfinite_terms(const Plan& p, const Item& it, int64_t ch, const VisitRows& vr, int64_t k0, int64_t width,
                         const std::vector<int64_t>& bad_k, const float* k, float* dk, float* dv, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t rp = vr.rp;
  const auto seen = [&](int64_t j, int64_t r) {
    int64_t h, i;
    return row_of(p, vr, it.hk, ch, r, h, i) && w.lse[r] != kPosInf && p.pattern.allow(i, k0 + j);
  };
  for (int64_t j : bad_k)
    for (int64_t r = 0; r < rp; ++r)
      if (seen(j, r))
        for (int64_t c = 0; c < s.d_qk; ++c) w.dqt[c * rp + r] += w.dpt[j * rp + r] * k[j * s.d_qk + c];
  for (int64_t r : w.bad_q)
    for (int64_t j = 0; j < width; ++j)
      if (seen(j, r))
        for (int64_t c = 0; c < s.d_qk; ++c) dk[j * p.dqk_pad + c] += w.dpt[j * rp + r] * w.qt[c * rp + r];
  for (int64_t r : w.bad_do)
    for (int64_t j = 0; j < width; ++j)
      if (seen(j, r))
        for (int64_t c = 0; c < s.d_v; ++c) dv[j * p.dv_pad + c] += w.pt[j * rp + r] * w.dot[c * rp + r];
}

// The query tiles that visit any KV tile of the item's block, in increasing order, with
// the class of each (the pattern's columns merged).
void block_visits(const Plan& p, const Item& it, Workspace& w) {
  w.visits.clear();
  const int64_t t0 = it.kv_block * p.kb, t1 = std::min(t0 + p.kb, p.kv_tiles);
  std::vector<BlockVisit> merged;
  for (int64_t t = t0; t < t1; ++t) {
    merged.clear();
    size_t a = 0;
    for (const QTileRef& r : p.by_kv.line(t, w.column)) {
      while (a < w.visits.size() && w.visits[a].q_tile < r.q_tile) merged.push_back(w.visits[a++]);
      if (a < w.visits.size() && w.visits[a].q_tile == r.q_tile) {
        merged.push_back(w.visits[a++]);
      } else {
        BlockVisit v{r.q_tile, {}};
        std::fill(std::begin(v.cls), std::end(v.cls), TileClass::Empty);
        merged.push_back(v);
      }
      merged.back().cls[t - t0] = r.cls;
    }
    merged.insert(merged.end(), w.visits.begin() + static_cast<ptrdiff_t>(a), w.visits.end());
    w.visits.swap(merged);
  }
}

// The place of the item's block among the KV blocks that query tile qt visits: the turn of
// its dQ contribution.
int32_t block_rank(const Plan& p, const Item& it, int64_t qt, Workspace& w) {
  int32_t rank = 0;
  int64_t last = -1;
  for (const TileRef& t : p.by_query.line(qt, w.line)) {
    const int64_t blk = t.kv_tile / p.kb;
    if (blk >= it.kv_block) break;
    rank += blk != last;
    last = blk;
  }
  return rank;
}

// One tile step of the item: KV tile `sub` of its block against the packed query tile.
// Adds to the block's dK, dV rows and to the query tile's dQt.
void tile_step(const Plan& p, const SimdOps& ops, const BwdSimdOps& bops, const Inputs& in, const Item& it,
               int64_t ch, const VisitRows& vr, int64_t sub, TileClass cls, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t rp = vr.rp;
  int64_t j0 = sub * kBlockKeys, k0 = it.kv_block * p.kb * kBlockKeys + j0;
  int64_t width = std::min(kBlockKeys, s.kv_len - k0);
  const bool partial = cls == TileClass::Partial;
  TileMask mask{};
  if (partial) {  // only the span of the visible keys is computed
    mask = w.masks.tile(k0, width);
    if (mask.width == 0) return;
    j0 += mask.offset;
    k0 += mask.offset;
    width = mask.width;
  }
  const float* k = w.k_rows.get() + j0 * s.d_qk;
  float* dk = w.dk_acc.get() + j0 * p.dqk_pad;
  float* dv = w.dv_acc.get() + j0 * p.dv_pad;
  const KvRows kv_k{k, s.d_qk, nullptr, 0, width};
  const KvRows kv_v{w.v_rows.get() + j0 * s.d_v, s.d_v, nullptr, 0, width};
  ops.scores(w.qt.get(), rp, s.d_qk, kv_k, w.st.get());  // S = K Qt (scaled)
  for (int64_t r = 0; r < rp; ++r) w.pos_rel[r] = w.pos[r] - static_cast<float>(k0);
  const float* slopes = in.opts.alibi_slopes.empty() ? nullptr : w.slopes.get();
  if (in.opts.has_mods())
    ops.apply_mods(w.st.get(), rp, width, ScoreMods{static_cast<float>(in.opts.softcap), slopes, w.pos_rel.get()});
  if (partial) ops.apply_mask(w.st.get(), rp, width, mask);
  bops.probabilities(w.st.get(), rp, width, w.lse.get(), w.pt.get());  // P
  ops.scores(w.dot.get(), rp, s.d_v, kv_v, w.dpt.get());                // dP = V dOt
  bops.score_grads(w.st.get(), w.pt.get(), w.dpt.get(), rp, width, {w.lse.get(), w.d.get()},
                   static_cast<float>(in.opts.softcap), slopes, w.pos_rel.get());  // dS
  std::vector<int64_t>& bad_k = w.bad_k;
  const bool guard = partial && !(bad_k.empty() && w.bad_q.empty() && w.bad_do.empty());
  std::vector<int64_t> tile_bad_k;
  if (guard) {
    for (int64_t j : bad_k)
      if (j >= j0 && j < j0 + width) tile_bad_k.push_back(j - j0);
    std::copy(k, k + width * s.d_qk, w.k_clean.get());
    for (int64_t j : tile_bad_k) std::fill(w.k_clean.get() + j * s.d_qk, w.k_clean.get() + (j + 1) * s.d_qk, 0.0f);
    for (int64_t r : w.bad_q) std::fill(w.qr.get() + r * p.dqk_pad, w.qr.get() + (r + 1) * p.dqk_pad, 0.0f);
    for (int64_t r : w.bad_do) std::fill(w.dor.get() + r * p.dv_pad, w.dor.get() + (r + 1) * p.dv_pad, 0.0f);
  }
  // dV += P^T dO and dK += dS^T Q: reductions over the packed rows.
  const int64_t keys4 = (width + 3) / 4 * 4;
  ops.scores(w.dor.get(), p.dv_pad, rp, KvRows{w.pt.get(), rp, nullptr, 0, width}, w.tmp.get());
  bops.add(dv, w.tmp.get(), keys4 * p.dv_pad);
  ops.scores(w.qr.get(), p.dqk_pad, rp, KvRows{w.dpt.get(), rp, nullptr, 0, width}, w.tmp.get());
  bops.add(dk, w.tmp.get(), keys4 * p.dqk_pad);
  // dQt += K^T dSt.
  const KvRows kq{nullptr, 0, guard ? w.k_clean.get() : k, s.d_qk, width};
  ops.accumulate(w.dqt.get(), rp, s.d_qk, w.ones.get(), w.dpt.get(), kq);
  if (guard) {
    add_nonfinite_terms(p, it, ch, vr, k0, width, tile_bad_k, k, dk, dv, w);
    // The next tile of this query tile needs the rows as packed.
    for (int64_t r : w.bad_q)
      for (int64_t c = 0; c < s.d_qk; ++c) w.qr[r * p.dqk_pad + c] = w.qt[c * rp + r];
    for (int64_t r : w.bad_do)
      for (int64_t c = 0; c < s.d_v; ++c) w.dor[r * p.dv_pad + c] = w.dot[c * rp + r];
  }
}

// The rows a visit packs, and its masks started: the whole query tile, or, when every
// tile of the visit is Partial, only the positions that see one of the block's keys, in as
// few vectors of rows as they need. Longformer's global rows are two positions of a tile
// that visits every KV tile; packed whole, 60 of its 64 rows would be computed for nothing.
VisitRows visit_rows(const Plan& p, const Item& it, const BlockVisit& visit, int64_t lanes, Workspace& w) {
  const VisitRows whole{visit.q_tile, visit.q_tile * p.bm, p.bm, p.rows, p.rp};
  const TileClass* end = visit.cls + p.kb;
  if (std::find(visit.cls, end, TileClass::Partial) == end) return whole;
  w.masks.start(p.pattern, whole.q0, p.s.q_len);
  if (std::find(visit.cls, end, TileClass::Full) != end) return whole;
  const int64_t k0 = it.kv_block * p.kb * kBlockKeys;
  const auto [first, last] = w.masks.positions_seeing(k0, k0 + p.kb * kBlockKeys);
  const int64_t bm = std::max<int64_t>(last - first, 1);
  const int64_t rp = (p.heads * bm + lanes - 1) / lanes * lanes;
  if (rp >= p.rp) return whole;
  w.masks.narrow(first, bm, rp);
  return {visit.q_tile, whole.q0 + first, bm, p.heads * bm, rp};
}

// One work item: the KV tiles of block it.kv_block of (it.b, it.hk), against every query
// tile that visits one of them. Each query tile is packed once per item, and its dQ gets
// one contribution per item.
void run_item(const Plan& p, const SimdOps& ops, const BwdSimdOps& bops, const Inputs& in, const Item& it,
              const DqAccumulator& dq, DqTurns& turns, const std::atomic<bool>& stop, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t k0 = it.kv_block * p.kb * kBlockKeys, width = std::min(p.kb * kBlockKeys, s.kv_len - k0);
  w.bad_k.clear();
  for (int64_t j = 0; j < width; ++j) {
    if (!load_row(ops, in.k, it.b, it.hk, k0 + j, w.k_rows.get() + j * s.d_qk)) w.bad_k.push_back(j);
    load_row(ops, in.v, it.b, it.hk, k0 + j, w.v_rows.get() + j * s.d_v);
  }
  std::fill(w.dk_acc.get(), w.dk_acc.get() + p.kb * kBlockKeys * p.dqk_pad, 0.0f);
  std::fill(w.dv_acc.get(), w.dv_acc.get() + p.kb * kBlockKeys * p.dv_pad, 0.0f);
  block_visits(p, it, w);
  for (int64_t ch = 0; ch < p.chunks; ++ch)
    for (const BlockVisit& visit : w.visits) {
      const VisitRows vr = visit_rows(p, it, visit, ops.lanes(), w);
      pack_rows(p, ops, in.q, in.lse, in.d_o, in.d, in.opts, it.b, it.hk, ch, vr, w);
      std::fill(w.dqt.get(), w.dqt.get() + s.d_qk * vr.rp, 0.0f);
      for (int64_t sub = 0; sub < p.kb; ++sub)
        if (visit.cls[sub] != TileClass::Empty) tile_step(p, ops, bops, in, it, ch, vr, sub, visit.cls[sub], w);
      const int64_t tile_id = ((it.b * s.kv_heads + it.hk) * p.chunks + ch) * p.q_tiles + visit.q_tile;
      turns.add_in_turn(tile_id, block_rank(p, it, visit.q_tile, w), stop, [&] {
        for (int64_t r = 0; r < vr.rows; ++r) {
          int64_t h, i;
          if (!row_of(p, vr, it.hk, ch, r, h, i)) continue;
          float* dst = dq.row(it.b, h, i);
          for (int64_t c = 0; c < s.d_qk; ++c) dst[c] += w.dqt[c * vr.rp + r] * p.scale;
        }
      });
    }
}

// Writes the item's dK and dV rows.
void write_kv_grads(const Plan& p, const Item& it, const Workspace& w, const MutTensorView& dk,
                    const MutTensorView& dv) {
  const int64_t k0 = it.kv_block * p.kb * kBlockKeys, width = std::min(p.kb * kBlockKeys, p.s.kv_len - k0);
  const auto write = [&](const MutTensorView& t, const float* acc, int64_t pad) {
    const int64_t dim = t.size(3);
    for (int64_t j = 0; j < width; ++j) {
      if (t.dtype() == DType::f32 && t.stride(3) == 1) {
        std::memcpy(static_cast<float*>(t.mutable_data()) + t.offset(it.b, it.hk, k0 + j, 0), acc + j * pad,
                    static_cast<size_t>(dim) * sizeof(float));
        continue;
      }
      for (int64_t c = 0; c < dim; ++c) t.set(acc[j * pad + c], it.b, it.hk, k0 + j, c);
    }
  };
  write(dk, w.dk_acc.get(), p.dqk_pad);
  write(dv, w.dv_acc.get(), p.dv_pad);
}

Plan make_plan(const AttnProblem& prob, const FlashBwdConfig& cfg, int64_t lanes) {
  Plan p{tile_geometry(prob.shape, cfg.packed_rows, lanes), prob.shape, prob.pattern, 0, 0, 0, 0, 0, {}, {}, 0};
  const AttnShape& s = p.s;
  p.kv_tiles = (s.kv_len + kBlockKeys - 1) / kBlockKeys;
  p.kb = std::clamp<int64_t>(cfg.kv_tiles_per_item, 1, 8);
  p.kv_blocks = (p.kv_tiles + p.kb - 1) / p.kb;
  p.dqk_pad = (s.d_qk + lanes - 1) / lanes * lanes;
  p.dv_pad = (s.d_v + lanes - 1) / lanes * lanes;
  p.by_query = p.pattern.tile_rows(p.bm, kBlockKeys);
  p.by_kv = p.pattern.tile_columns(p.bm, kBlockKeys);
  p.scale = static_cast<float>(s.softmax_scale());
  return p;
}

}  // namespace

void flash_backward(const TensorView& q, const TensorView& k, const TensorView& v, const TensorView& o,
                    const TensorView& lse, const TensorView& d_o, const AttendOptions& opts, const MutTensorView& dq,
                    const MutTensorView& dk, const MutTensorView& dv, const MutTensorView& dsink,
                    const FlashBwdConfig& cfg) {
  const AttnProblem prob = prepare_backward(q, k, v, o, lse, d_o, opts, dq, dk, dv, dsink);
  const SimdOps ops = simd_ops();
  const BwdSimdOps bops = bwd_simd_ops();
  const Plan p = make_plan(prob, cfg, ops.lanes());
  const AttnShape& s = p.s;
  const std::vector<float> dvec = row_dots(p, ops, o, lse, d_o, opts, dsink);

  // dQ is summed in f32: in place when dq is contiguous f32, else in a copy written at the end.
  Tensor dq_copy;
  DqAccumulator acc{};
  if (dq.dtype() == DType::f32 && dq.stride(3) == 1) {
    acc = {static_cast<float*>(dq.mutable_data()), dq.stride(0), dq.stride(1), dq.stride(2)};
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.q_heads; ++h)
        for (int64_t i = 0; i < s.q_len; ++i) std::fill(acc.row(b, h, i), acc.row(b, h, i) + s.d_qk, 0.0f);
  } else {
    dq_copy = Tensor(DType::f32, {s.batch, s.q_heads, s.q_len, s.d_qk});  // zero-filled
    acc = {static_cast<float*>(dq_copy.data()), s.q_heads * s.q_len * s.d_qk, s.q_len * s.d_qk, s.d_qk};
  }

  // KV-tile-major: every item with a lower KV tile of the same head comes first (see
  // flash_bwd.hpp for why nothing then deadlocks).
  std::vector<Item> items;
  for (int64_t kb = 0; kb < p.kv_blocks; ++kb)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t hk = 0; hk < s.kv_heads; ++hk) items.push_back({b, hk, kb});
  DqTurns turns(s.batch * s.kv_heads * p.chunks * p.q_tiles, cfg.deterministic);
  const int64_t steps = p.pattern.visited_pairs() / kBlockKeys;
  const int threads = steps * s.q_heads >= 4096 ? omp_get_max_threads() : 1;
  std::vector<std::unique_ptr<Workspace>> spaces;
  for (int t = 0; t < threads; ++t) spaces.push_back(std::make_unique<Workspace>(p));

  // Items are handed out in order (an atomic counter, not OpenMP's schedule, whose order
  // is unspecified). The first exception stops every thread, waiting ones included.
  const Inputs in{q, k, v, lse, d_o, opts, dvec};
  std::atomic<int64_t> next{0};
  std::atomic<bool> stop{false};
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    Workspace& w = *spaces[static_cast<size_t>(omp_get_thread_num())];
    for (;;) {
      const int64_t n = next.fetch_add(1);
      if (n >= static_cast<int64_t>(items.size()) || stop.load()) break;
      try {
        run_item(p, ops, bops, in, items[static_cast<size_t>(n)], acc, turns, stop, w);
        write_kv_grads(p, items[static_cast<size_t>(n)], w, dk, dv);
      } catch (...) {
#pragma omp critical(attnkit_flash_bwd_error)
        if (!error) error = std::current_exception();
        stop.store(true);
        break;
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (dq_copy.numel() > 0)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.q_heads; ++h)
        for (int64_t i = 0; i < s.q_len; ++i)
          for (int64_t c = 0; c < s.d_qk; ++c) dq.set(acc.row(b, h, i)[c], b, h, i, c);
}

}  // namespace attnkit::flash
