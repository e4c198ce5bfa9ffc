// The flash forward kernel's driver: FlashAttention's tiling on the CPU. Queries are
// split into tiles that pack the g heads sharing a KV head; each tile walks the KV tiles
// its pattern lists (Empty tiles never touched), keeping a running max and sum per row,
// so the n x n score matrix never exists. Work items (batch x KV head x query tile, and
// key chunks under split-KV) are spread over OpenMP threads; each thread owns a
// workspace of a few tiles. The arithmetic lives in flash_simd.cpp.
#include <algorithm>
#include <cmath>
#include <limits>
#include <exception>
#include <memory>
#include <numeric>
#include <optional>
#include <span>

#include <hwy/aligned_allocator.h>
#include <omp.h>

#include "attnkit/merge.hpp"
#include "kernels/flash.hpp"
#include "kernels/online_softmax.hpp"
#include "kernels/tile_mask.hpp"

namespace attnkit::flash {

namespace {

using softmax::kNegInf;

struct Plan : TileGeometry {
  AttnShape s;
  BoundPattern pattern;
  int64_t splits;  // chunks of an item's key tiles (split-KV), merged by LSE
  std::vector<int64_t> tiles_per_row;  // non-empty kv tiles per query tile
  // The kv tiles of each query tile, as the pattern gives them: built on the fly in O(their
  // count) for analytic kinds (causal holds no list at all), compiled once for the others.
  TileRows tiles;
  float q_scale;  // applied while packing Qt (f32 path) or to S (native bf16 path)
  Bf16Ops bf16;   // native bf16 dot products, when every input is contiguous bf16
};

struct WorkItem {
  int64_t b, hk, h0, q_tile, split;  // h0: the first query head packed in the tile
  int64_t first, last;  // entries of tiles.row(q_tile) this item walks
};

// Per-thread buffers: a handful of tiles, independent of the sequence lengths.
struct Workspace {
  hwy::AlignedFreeUniquePtr<float[]> qt, st, ot, m, l, alpha, k_rows, v_rows, pos_rel, slopes;
  hwy::AlignedFreeUniquePtr<uint16_t[]> qt2, pv_pairs, v16;       // native bf16 path
  hwy::AlignedFreeUniquePtr<float[]> v_clean;  // a V tile without its non-finite rows
  std::vector<int64_t> bad_keys;               // keys of a Partial tile with inf / NaN in V
  std::vector<int64_t> pos;  // absolute query position per packed row (int64: exact at any length)
  std::vector<TileRef> tile_row;
  TileMaskBuilder masks;  // of the query tile's Partial tiles

  template <class T>
  static hwy::AlignedFreeUniquePtr<T[]> alloc(int64_t n) {
    auto ptr = hwy::AllocateAligned<T>(static_cast<size_t>(n));
    if (!ptr) throw std::bad_alloc();
    return ptr;
  }

  explicit Workspace(const Plan& p) : masks(p.bm, p.heads, p.rp) {
    const AttnShape& s = p.s;
    qt = alloc<float>(s.d_qk * p.rp);
    st = alloc<float>(kBlockKeys * p.rp);
    ot = alloc<float>(s.d_v * p.rp);
    m = alloc<float>(p.rp);
    l = alloc<float>(p.rp);
    alpha = alloc<float>(p.rp);
    k_rows = alloc<float>(kBlockKeys * s.d_qk);
    v_rows = alloc<float>(kBlockKeys * s.d_v);
    pos_rel = alloc<float>(p.rp);
    slopes = alloc<float>(p.rp);
    v_clean = alloc<float>(kBlockKeys * s.d_v);
    if (p.bf16.available) {
      qt2 = alloc<uint16_t>((s.d_qk + 1) / 2 * 2 * p.rp);
      pv_pairs = alloc<uint16_t>(kBlockKeys * (p.rp + s.d_v + 1));
      v16 = alloc<uint16_t>(kBlockKeys * s.d_v);
    }
    pos.resize(static_cast<size_t>(p.rp));
  }
};

// K or V rows [j0, j0 + width) of (b, hk) as f32 rows: the caller's memory when it already
// is contiguous f32, else converted into `scratch`.
const float* rows_f32(const SimdOps& ops, const TensorView& t, int64_t b, int64_t hk, int64_t j0, int64_t width,
                      float* scratch, int64_t& stride) {
  const int64_t dim = t.size(3);
  if (t.stride(3) == 1 && t.dtype() == DType::f32) {
    stride = t.stride(2);
    return static_cast<const float*>(t.data()) + t.offset(b, hk, j0, 0);
  }
  stride = dim;
  for (int64_t j = 0; j < width; ++j) {
    float* dst = scratch + j * dim;
    const int64_t off = t.offset(b, hk, j0 + j, 0);
    if (t.stride(3) == 1 && t.dtype() == DType::bf16) {
      ops.bf16_to_f32(static_cast<const uint16_t*>(t.data()) + off, dst, dim);
    } else if (t.stride(3) == 1 && t.dtype() == DType::f16) {
      ops.f16_to_f32(static_cast<const uint16_t*>(t.data()) + off, dst, dim);
    } else {
      for (int64_t c = 0; c < dim; ++c) dst[c] = static_cast<float>(t.load(off + c * t.stride(3)));
    }
  }
  return scratch;
}

const uint16_t* bf16_rows(const TensorView& t, int64_t b, int64_t hk, int64_t j0) {
  return static_cast<const uint16_t*>(t.data()) + t.offset(b, hk, j0, 0);
}

// NaN and inf in V at keys a row may not see. Such a key gets P = 0 in that row, and
// 0 * NaN = NaN would poison the row, against the rule that NaN reaches only the rows that
// see it. So on Partial tiles (the only ones with hidden keys) the keys whose V row is not
// finite are listed, kept out of the tile's product, and added back to the rows that see
// them. A finite tile, the common case, costs one SIMD pass over its V rows (an AND and an
// unsigned MAX a vector, about 1.5 % of the tile's FMAs); only a tile where that pass finds
// inf or NaN is scanned row by row. Scanned element by element, every tile had cost 1.5 %
// of all instructions on causal f32 2048 and 5 % on window:512,0 8192 (callgrind). Caching
// the answer per KV tile across query tiles would save some of these passes, each ~0.2 % of
// the run: not worth state shared between work items.
void nonfinite_rows(const SimdOps& ops, const TensorView& t, int64_t b, int64_t hk, int64_t j0, int64_t width,
                    std::vector<int64_t>& out) {
  out.clear();
  const int64_t dim = t.size(3);
  if (t.stride(3) == 1 && t.dtype() != DType::f64) {
    const int64_t off = t.offset(b, hk, j0, 0);
    const bool any =
        t.dtype() == DType::f32
            ? ops.any_nonfinite_f32(static_cast<const float*>(t.data()) + off, t.stride(2), width, dim)
            : ops.any_nonfinite_16(static_cast<const uint16_t*>(t.data()) + off, t.stride(2), width, dim,
                                   t.dtype() == DType::bf16 ? uint16_t{0x7F80} : uint16_t{0x7C00});
    if (!any) return;
  }
  for (int64_t j = 0; j < width; ++j) {
    const int64_t off = t.offset(b, hk, j0 + j, 0);
    bool bad = false;
    if (t.stride(3) == 1 && (t.dtype() == DType::bf16 || t.dtype() == DType::f16)) {
      const auto* x = static_cast<const uint16_t*>(t.data()) + off;
      const uint16_t e = t.dtype() == DType::bf16 ? 0x7F80 : 0x7C00;  // all-ones exponent
      for (int64_t c = 0; c < dim; ++c) bad |= (x[c] & e) == e;
    } else if (t.stride(3) == 1 && t.dtype() == DType::f32) {
      const auto* x = static_cast<const float*>(t.data()) + off;
      for (int64_t c = 0; c < dim; ++c) bad |= !(std::fabs(x[c]) <= std::numeric_limits<float>::max());
    } else {
      for (int64_t c = 0; c < dim; ++c) bad |= !std::isfinite(t.load(off + c * t.stride(3)));
    }
    if (bad) out.push_back(j);
  }
}

// A copy of `width` rows of `dim` values (row stride `stride`) into `scratch` with the rows
// in `bad` zeroed; stride becomes dim.
template <class T>
const T* without_rows(const T* rows, int64_t& stride, int64_t width, int64_t dim, const std::vector<int64_t>& bad,
                      T* scratch) {
  for (int64_t j = 0; j < width; ++j) std::copy(rows + j * stride, rows + j * stride + dim, scratch + j * dim);
  for (int64_t j : bad) std::fill(scratch + j * dim, scratch + (j + 1) * dim, T{0});
  stride = dim;
  return scratch;
}

// Ot[c][r] += P[j][r] V[j][c] for the listed keys j, in the rows whose mask admits j.
void add_bad_keys(const Plan& p, const TensorView& v, const WorkItem& it, int64_t k0, const TileMask& mask,
                  Workspace& w) {
  for (int64_t j : w.bad_keys) {
    const float jf = static_cast<float>(j);
    const int64_t off = v.offset(it.b, it.hk, k0 + j, 0);
    for (int64_t r = 0; r < p.rows; ++r) {
      bool seen = false;
      for (int64_t t = 0; t < mask.levels; ++t) seen |= jf >= mask.lo[t * p.rp + r] && jf < mask.hi[t * p.rp + r];
      if (!seen) continue;
      const float pr = w.st[j * p.rp + r];
      for (int64_t c = 0; c < p.s.d_v; ++c) w.ot[c * p.rp + r] += pr * static_cast<float>(v.load(off + c * v.stride(3)));
    }
  }
}

// The query head and row of packed row r; false for padding rows (past the group's heads,
// past q_len, or past rows).
bool row_of(const Plan& p, const WorkItem& it, int64_t r, int64_t& h, int64_t& i) {
  h = it.h0 + r / p.bm;
  i = it.q_tile * p.bm + r % p.bm;
  return r < p.rows && h < (it.hk + 1) * p.group && i < p.s.q_len;
}

// Packs the tile's queries into Qt [Dqk][Rp] (scaled), and its per-row positions/slopes.
// Each query row is first brought to f32 (in place when it already is), then scattered
// into its column of Qt.
void pack_queries(const Plan& p, const SimdOps& ops, const TensorView& q, const AttendOptions& opts,
                  const WorkItem& it, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t pairs = (s.d_qk + 1) / 2;
  if (p.bf16.available) {
    std::fill(w.qt2.get(), w.qt2.get() + pairs * 2 * p.rp, uint16_t{0});
  } else {
    std::fill(w.qt.get(), w.qt.get() + s.d_qk * p.rp, 0.0f);
  }
  for (int64_t r = 0; r < p.rp; ++r) {
    int64_t h, i;
    const bool valid = row_of(p, it, r, h, i);
    w.pos[r] = i + s.causal_offset();
    w.slopes[r] = valid && !opts.alibi_slopes.empty() ? static_cast<float>(opts.alibi_slopes[h]) : 0.0f;
    if (!valid) continue;
    if (p.bf16.available) {  // Qt2[c / 2][r][c % 2], the raw bf16 bits
      const uint16_t* row = static_cast<const uint16_t*>(q.data()) + q.offset(it.b, h, i, 0);
      for (int64_t c = 0; c < s.d_qk; ++c) w.qt2[((c / 2) * p.rp + r) * 2 + c % 2] = row[c];
      continue;
    }
    int64_t unused_stride;
    const float* row = rows_f32(ops, q, it.b, h, i, 1, w.k_rows.get(), unused_stride);
    for (int64_t c = 0; c < s.d_qk; ++c) w.qt[c * p.rp + r] = row[c] * p.q_scale;
  }
}

// Writes row r of the item, scaled by inv, to O[b, h, i, :].
void write_row(const Plan& p, const Workspace& w, const MutTensorView& o, int64_t r, int64_t b, int64_t h, int64_t i,
               float inv) {
  if (o.dtype() == DType::f32 && o.stride(3) == 1) {
    float* dst = static_cast<float*>(o.mutable_data()) + o.offset(b, h, i, 0);
    for (int64_t c = 0; c < p.s.d_v; ++c) dst[c] = w.ot[c * p.rp + r] * inv;
    return;
  }
  for (int64_t c = 0; c < p.s.d_v; ++c) o.set(w.ot[c * p.rp + r] * inv, b, h, i, c);
}

// One work item: the online-softmax recurrence over its KV tiles. Leaves the unnormalised
// Ot and the row statistics m, l in the workspace.
void run_item(const Plan& p, const SimdOps& ops, const TensorView& q, const TensorView& k, const TensorView& v,
              const AttendOptions& opts, const WorkItem& it, Workspace& w) {
  const AttnShape& s = p.s;
  const int64_t q0 = it.q_tile * p.bm;
  pack_queries(p, ops, q, opts, it, w);
  std::fill(w.m.get(), w.m.get() + p.rp, kNegInf);
  std::fill(w.l.get(), w.l.get() + p.rp, 0.0f);
  std::fill(w.ot.get(), w.ot.get() + s.d_v * p.rp, 0.0f);
  w.masks.start(p.pattern, q0, s.q_len);
  const bool has_mods = opts.softcap > 0 || !opts.alibi_slopes.empty();
  const ScoreMods mods{static_cast<float>(opts.softcap), opts.alibi_slopes.empty() ? nullptr : w.slopes.get(),
                       w.pos_rel.get()};

  const std::span<const TileRef> row = p.tiles.line(it.q_tile, w.tile_row);
  for (const TileRef& t : row.subspan(static_cast<size_t>(it.first), static_cast<size_t>(it.last - it.first))) {
    int64_t k0 = t.kv_tile * kBlockKeys, width = std::min(kBlockKeys, s.kv_len - k0);
    TileMask mask{};
    if (t.cls == TileClass::Partial) {  // only the span of the visible keys is computed
      mask = w.masks.tile(k0, width);
      if (mask.width == 0) continue;
      k0 += mask.offset;
      width = mask.width;
    }
    KvRows kv{};
    kv.width = width;
    if (p.bf16.available) {
      p.bf16.scores(w.qt2.get(), p.rp, s.d_qk, bf16_rows(k, it.b, it.hk, k0), k.stride(2), width, p.q_scale,
                    w.st.get());  // S = scale K Q^T
    } else {
      kv.k = rows_f32(ops, k, it.b, it.hk, k0, width, w.k_rows.get(), kv.k_stride);
      kv.v = rows_f32(ops, v, it.b, it.hk, k0, width, w.v_rows.get(), kv.v_stride);
      ops.scores(w.qt.get(), p.rp, s.d_qk, kv, w.st.get());  // S = scale K Q^T
    }
    if (has_mods) {
      for (int64_t r = 0; r < p.rp; ++r) w.pos_rel[r] = static_cast<float>(w.pos[r] - k0);
      ops.apply_mods(w.st.get(), p.rp, width, mods);  // softcap, ALiBi
    }
    if (t.cls == TileClass::Partial) {
      ops.apply_mask(w.st.get(), p.rp, width, mask);
      nonfinite_rows(ops, v, it.b, it.hk, k0, width, w.bad_keys);
    }
    ops.online_softmax(w.st.get(), p.rp, width, w.m.get(), w.l.get(), w.alpha.get());  // S -> P; m, l
    const bool guard = t.cls == TileClass::Partial && !w.bad_keys.empty();
    if (p.bf16.available) {  // O = alpha O + V^T P
      const uint16_t* vrows = bf16_rows(v, it.b, it.hk, k0);
      int64_t vstride = v.stride(2);
      if (guard) vrows = without_rows(vrows, vstride, width, s.d_v, w.bad_keys, w.v16.get());
      p.bf16.accumulate(w.ot.get(), p.rp, s.d_v, w.alpha.get(), w.st.get(), vrows, vstride, width, w.pv_pairs.get());
    } else {
      if (guard) kv.v = without_rows(kv.v, kv.v_stride, width, s.d_v, w.bad_keys, w.v_clean.get());
      ops.accumulate(w.ot.get(), p.rp, s.d_v, w.alpha.get(), w.st.get(), kv);
    }
    if (guard) add_bad_keys(p, v, it, k0, mask, w);
  }
}

// The learned sink logit of query head h, or -inf without sinks.
float sink_of(const AttendOptions& opts, int64_t h) {
  return opts.has_sinks() ? static_cast<float>(opts.sink_logits[static_cast<size_t>(h)]) : kNegInf;
}

// Row r of the item as (O row / l, LSE) in natural log; an empty row gives 0 and -inf. The
// sink joins here, or after the merge of a split item's chunks (with_sink false).
template <class Emit>
void finish_rows(const Plan& p, const AttendOptions& opts, const WorkItem& it, const Workspace& w, bool with_sink,
                 Emit&& emit) {
  for (int64_t r = 0; r < p.rows; ++r) {
    int64_t h, i;
    if (!row_of(p, it, r, h, i)) continue;
    const softmax::Finished f = softmax::finish_row(w.m[r], w.l[r], with_sink ? sink_of(opts, h) : kNegInf);
    emit(r, h, i, f.inv, f.lse);
  }
}

Plan make_plan(const AttnProblem& prob, const TensorView& q, const TensorView& k, const TensorView& v,
               const AttendOptions& opts, const FlashConfig& cfg, int64_t lanes) {
  Plan p{tile_geometry(prob.shape, cfg.packed_rows, lanes), prob.shape, prob.pattern, 1, {}, {}, 0, {}};
  const AttnShape& s = p.s;
  p.tiles = p.pattern.tile_rows(p.bm, kBlockKeys);
  std::vector<TileRef> row;
  for (int64_t qt = 0; qt < p.q_tiles; ++qt)
    p.tiles_per_row.push_back(static_cast<int64_t>(p.tiles.line(qt, row).size()));
  p.q_scale = static_cast<float>(s.softmax_scale());
  auto bf16_contiguous = [](const TensorView& t) { return t.dtype() == DType::bf16 && t.stride(3) == 1; };
  // The bf16 micro-kernels step over rows 16 at a time: they need the 16-lane target.
  if (bf16_contiguous(q) && bf16_contiguous(k) && bf16_contiguous(v) && lanes == 16) p.bf16 = bf16_ops();
  const int64_t items = s.batch * s.kv_heads * p.chunks * p.q_tiles;
  if (items > 0 && items < cfg.min_work_items) p.splits = (cfg.min_work_items + items - 1) / items;
  return p;
}

}  // namespace

void flash_forward(const TensorView& q, const TensorView& k, const TensorView& v, const AttendOptions& opts,
                   const MutTensorView& o, const MutTensorView& lse, const FlashConfig& cfg) {
  const AttnProblem prob = prepare_attention(q, k, v, opts, o, lse);
  const SimdOps ops = simd_ops();
  const Plan p = make_plan(prob, q, k, v, opts, cfg, ops.lanes());
  const AttnShape& s = p.s;

  // Work items, heaviest first so the dynamic schedule ends balanced (causal and
  // windowed query tiles differ in cost). Under split-KV an item covers a key chunk.
  std::vector<WorkItem> items;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t hk = 0; hk < s.kv_heads; ++hk)
      for (int64_t ch = 0; ch < p.chunks; ++ch)
        for (int64_t qt = 0; qt < p.q_tiles; ++qt) {
          const int64_t n = p.tiles_per_row[static_cast<size_t>(qt)], h0 = hk * p.group + ch * p.heads;
          for (int64_t c = 0; c < p.splits; ++c)
            items.push_back({b, hk, h0, qt, c, n * c / p.splits, n * (c + 1) / p.splits});
        }
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return items[a].last - items[a].first > items[b].last - items[b].first;
  });

  // Split-KV partials: normalised O [item][rows][Dv], running max and sum [item][rows].
  std::vector<float> part_o, part_m, part_l;
  if (p.splits > 1) {
    part_o.resize(items.size() * static_cast<size_t>(p.rows * s.d_v));
    part_m.resize(items.size() * static_cast<size_t>(p.rows));
    part_l.resize(items.size() * static_cast<size_t>(p.rows));
  }

  // Workspaces are allocated before the parallel region; tiny calls (a few tile steps)
  // run on the calling thread: waking a team costs more.
  int64_t steps = 0;
  for (const WorkItem& it : items) steps += it.last - it.first;
  const int threads = steps * p.rp >= 16 * 64 ? omp_get_max_threads() : 1;
  std::vector<std::unique_ptr<Workspace>> spaces;
  for (int t = 0; t < threads; ++t) spaces.push_back(std::make_unique<Workspace>(p));
  softmax::for_each_item(static_cast<int64_t>(order.size()), threads, [&](int64_t n, int thread) {
    Workspace& w = *spaces[static_cast<size_t>(thread)];
    const size_t idx = order[static_cast<size_t>(n)];
    const WorkItem& it = items[idx];
    run_item(p, ops, q, k, v, opts, it, w);
    if (p.splits == 1) {
      finish_rows(p, opts, it, w, true, [&](int64_t r, int64_t h, int64_t i, float inv, float row_lse) {
        write_row(p, w, o, r, it.b, h, i, inv);
        if (lse.rank() != 0) lse.set(row_lse, it.b, h, i);
      });
    } else {
      float* po = part_o.data() + idx * static_cast<size_t>(p.rows * s.d_v);
      std::copy(w.m.get(), w.m.get() + p.rows, part_m.begin() + static_cast<ptrdiff_t>(idx * size_t(p.rows)));
      std::copy(w.l.get(), w.l.get() + p.rows, part_l.begin() + static_cast<ptrdiff_t>(idx * size_t(p.rows)));
      finish_rows(p, opts, it, w, false, [&](int64_t r, int64_t, int64_t, float inv, float) {
        for (int64_t c = 0; c < s.d_v; ++c) po[r * s.d_v + c] = w.ot[c * p.rp + r] * inv;
      });
    }
  });
  if (p.splits == 1) return;

  // Merge each item's chunks (consecutive items) in chunk order.
  std::vector<float> acc(static_cast<size_t>(s.d_v));
  const auto rows_of = [&](size_t idx) { return idx * static_cast<size_t>(p.rows); };
  for (size_t first = 0; first < items.size(); first += static_cast<size_t>(p.splits)) {
    const WorkItem& it = items[first];
    for (int64_t r = 0; r < p.rows; ++r) {
      int64_t h, i;
      if (!row_of(p, it, r, h, i)) continue;
      float row_lse;
      softmax::merge_chunks(
          p.splits, s.d_v,
          [&](int64_t c) { return part_o.data() + (rows_of(first + size_t(c)) + size_t(r)) * size_t(s.d_v); },
          [&](int64_t c) { return part_m[rows_of(first + size_t(c)) + size_t(r)]; },
          [&](int64_t c) { return part_l[rows_of(first + size_t(c)) + size_t(r)]; }, acc.data(), row_lse);
      softmax::join_sink(acc.data(), s.d_v, row_lse, sink_of(opts, h));
      for (int64_t c = 0; c < s.d_v; ++c) o.set(acc[static_cast<size_t>(c)], it.b, h, i, c);
      if (lse.rank() != 0) lse.set(row_lse, it.b, h, i);
    }
  }
}

}  // namespace attnkit::flash
