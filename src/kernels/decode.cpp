// The decode kernel's driver: work items (sequence, KV head, chunk of tiles), the per-tile
// reader that turns a tile of logical keys into row pointers (one block-table / ring lookup
// per run of consecutive slots), the per-format tile step, the online softmax, and the
// split-KV merge. See decode.hpp for the semantics, decode_formats.hpp for the per-format
// table and decode_micro.hpp for the kernels.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <vector>

#include "attnkit/merge.hpp"
#include "kernels/decode_formats.hpp"
#include "kernels/decode_plan.hpp"
#include "kernels/decode_simd.hpp"
#include "cache/kv_rows.hpp"
#include "kernels/flash.hpp"
#include "kernels/nonfinite.hpp"
#include "kernels/online_softmax.hpp"

namespace attnkit {
namespace decode {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Below this many (sequence, KV head) items, keys are split into chunks of at least
// kMinChunkTiles tiles; both depend only on the shapes (deterministic results).
constexpr int64_t kMinItems = 32;
constexpr int64_t kMinChunkTiles = 8;

// Which kernels a call uses.
struct Kernels {
  SimdOps simd;
  flash::SimdOps convert;  // bf16 / f16 -> f32 rows
  bool stored;             // stored-byte micro-kernels for bf16 / f16 / int8 / int4 tiles
};

// Vectors on 64-byte boundaries: the micro-kernels' AVX-512 loads and stores of acc, s and
// the tiles then never split a cache line. With malloc's 16-byte alignment, adding one
// buffer to Scratch moved acc off a line boundary and slowed a bf16 decode of 65536 keys
// by 7 % (interleaved runs).
template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U>
  LineAligned(const LineAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* ptr, size_t) { ::operator delete(ptr, std::align_val_t{64}); }
  bool operator==(const LineAligned&) const = default;
};
template <class T>
using AlignedVector = std::vector<T, LineAligned<T>>;

// Per-thread buffers, allocated before the parallel region.
struct Scratch {
  AlignedVector<float> q, s, bias, acc, acc_before, m, l, alpha, ktile, vtile, angles, qs, vrow;
  AlignedVector<uint16_t> qb;
  AlignedVector<int8_t> q8;
  TileRows rows[2];  // the current tile's rows, and the next one's
  int cur = 0;

  Scratch(const Plan& p) {
    const auto z = [](AlignedVector<float>& v, int64_t n) { v.assign(static_cast<size_t>(n), 0.0f); };
    z(q, p.rows * p.dk);
    z(s, p.rows * kTileKeys);
    z(bias, p.rows * kTileKeys);
    z(acc, p.rows * p.dv);
    z(acc_before, p.rows * p.dv);
    z(m, p.rows);
    z(l, p.rows);
    z(alpha, p.rows);
    z(ktile, kTileKeys * p.dk);
    z(vtile, kTileKeys * p.dv);
    z(angles, p.dk);
    z(vrow, p.dv);
    qb.assign(static_cast<size_t>(p.rows * p.dk), 0);
    q8.assign(static_cast<size_t>(p.rows * p.dk), 0);
    z(qs, p.rows);
  }
};

// The query rows of w in every form the formats' kernels take (decode_formats.hpp).
QueryRows query_rows(Scratch& w) { return {w.q.data(), w.qb.data(), w.q8.data(), w.qs.data()}; }

struct Item {
  int64_t b, h, t0, t1;  // tiles [t0, t1) of sequence b, KV head h
};

// Loads, rotates and encodes the packed query rows r = head_in_group * nq + t.
void prepare_queries(const KvCache& cache, const Plan& p, const TensorView& q, int64_t b, int64_t h,
                     const DecodeFormat& tile_format, Scratch& w) {
  const KvCacheConfig& cfg = cache.config();
  const KvSequence& s = *p.seqs[static_cast<size_t>(b)];
  for (int64_t t = 0; t < p.nq; ++t) {
    const bool rotate = cfg.rope.has_value();
    const int64_t half = rotate ? cfg.rope->resolved_rotary_dim(p.dk) / 2 : 0;
    if (rotate)
      rope_angles(*cfg.rope, p.dk, cache.rope_position(s, s.held - p.nq + t), w.angles.data(),
                  w.angles.data() + half);
    for (int64_t hh = 0; hh < p.g; ++hh) {
      float* row = w.q.data() + (hh * p.nq + t) * p.dk;
      const int64_t base = q.offset(b, h * p.g + hh, t, 0);
      if (q.dtype() == DType::f32 && q.stride(3) == 1)
        std::memcpy(row, static_cast<const float*>(q.data()) + base, static_cast<size_t>(p.dk) * 4);
      else
        for (int64_t c = 0; c < p.dk; ++c) row[c] = static_cast<float>(q.load(base + c * q.stride(3)));
      if (rotate) rope_row_angles(*cfg.rope, p.dk, w.angles.data(), w.angles.data() + half, row);
    }
  }
  // The encoding the tiles' kernels take (bf16 rounding, int8 q8), if not f32.
  if (tile_format.encode_queries) tile_format.encode_queries(query_rows(w), p.rows, p.dk);
}

// The tile step for one format: S = Q K^T into w.s, then (after the softmax) O += P V. The
// rows of the next tile are resolved one step early and handed to the kernels to prefetch.
class TileStep {
 public:
  TileStep(const KvCache& cache, const Plan& p, const Kernels& k, int64_t layer, int64_t h, const KvSequence& s,
           Scratch& w)
      : cache_(cache),
        p_(p),
        k_(k),
        s_(s),
        w_(w),
        q_(query_rows(w)),
        convert_{k.convert.bf16_to_f32, k.simd.f16_to_f32} {
    const KvBlockLayout main = cache.layout(s);
    for (int key = 0; key < 2; ++key) {
      main_[key] = detail::kv_region_place(main, layer, h, key == 0);
      residual_[key] = detail::kv_region_place(cache.residual_layout(), layer, h, key == 0);
    }
    main_format_ = &decode_format(main.storage);
    residual_format_ = &decode_format(cache.residual_layout().storage);
    w_.rows[0].lo = w_.rows[1].lo = -1;
  }

  // Resolves the tile's rows (unless the previous step did) and computes S.
  void scores(const Tile& tile, const Tile* next) {
    TileRows& r = w_.rows[w_.cur];
    if (r.lo != tile.lo || !r.fast) resolve(tile, r, true);
    if (!r.params_ready) r.format->prepare_params(convert_, r);
    kahead_ = vahead_ = Ahead{};
    if (r.fast && next) {
      TileRows& nx = w_.rows[1 - w_.cur];
      resolve(*next, nx, false);
      if (nx.fast) kahead_ = {nx.krows, nx.n}, vahead_ = {nx.vrows, nx.n};
    }
    if (r.fast)
      r.format->scores(q_, p_.rows, p_.dk, r, w_.s.data(), kahead_);
    else
      k_.simd.scores_f32(w_.q.data(), p_.rows, p_.dk, f32_rows(r.krows), r.n, w_.s.data());
  }

  // O += P V for the tile of the last scores(), then moves on to the next tile's rows.
  // `partial`: the tile is not full (w_.bias holds its mask), and a NaN or inf in V at a
  // key hidden from a row must not reach that row (add_nonfinite_values). Such a key makes
  // the row's accumulator non-finite, so a partial tile is computed as usual and checked
  // after: only when some accumulator is not finite (a bad value in this tile's V, or one
  // a row already saw) is it redone from a copy with the guard. The copy and the check
  // read rows x dv floats; scanning the tile's V each time read kTileKeys x dv and cost up
  // to 12 % of an f16 decode of 256 keys with Nq = 3 (two tiles per head, one partial).
  // Full tiles pay nothing.
  void accumulate(bool partial) {
    TileRows& r = w_.rows[w_.cur];
    float* acc = w_.acc.data();
    const int64_t size = p_.rows * p_.dv;
    if (partial) std::copy(acc, acc + size, w_.acc_before.data());
    pv(r);
    if (partial && nonfinite::any_f32(acc, size)) {
      std::copy(w_.acc_before.data(), w_.acc_before.data() + size, acc);
      add_nonfinite_values(r);
      pv(r);
    }
    w_.cur = 1 - w_.cur;
  }

  // The table entry whose kernels the tiles use, and so the form the queries must take.
  static const DecodeFormat& query_format(const Kernels& k, KvStorage storage) {
    return k.stored ? decode_format(storage) : generic_format();
  }

 private:
  static const float* const* f32_rows(const void* const* rows) { return reinterpret_cast<const float* const*>(rows); }

  void pv(const TileRows& r) {
    if (r.fast)
      r.format->pv(w_.s.data(), p_.rows, r, p_.dv, w_.acc.data(), vahead_);
    else
      k_.simd.pv_f32(w_.s.data(), p_.rows, f32_rows(r.vrows), r.n, p_.dv, w_.acc.data());
  }

  // Fills r for `tile`, run by run; a tile on the generic path is dequantised into the
  // scratch tiles when `dequant` (only the current tile is).
  void resolve(const Tile& tile, TileRows& r, bool dequant) {
    r.lo = tile.lo;
    r.n = tile.hi - tile.lo;
    r.run_count = 0;
    r.params_ready = true;
    for (int64_t i = tile.lo, j = 0; i < tile.hi;) {
      const KvSlot at = cache_.locate(s_, i);
      const int64_t run = cache_.run_length(s_, i, tile.hi - i);
      const detail::KvRegionPlace* place = at.residual ? residual_ : main_;
      const detail::KvRegion kreg = detail::kv_region_at(place[0], cache_.storage(), at.block);
      const detail::KvRegion vreg = detail::kv_region_at(place[1], cache_.storage(), at.block);
      r.fast = k_.stored && !at.residual;  // uniform over a tile: tiles are cut at the int4 boundary
      r.format = at.residual ? residual_format_ : main_format_;
      r.group = kreg.group;
      locate_rows(kreg, vreg, r, j, at.slot, run);
      if (!r.fast && dequant) dequantise(kreg, vreg, r, j, run, at.slot, i);
      i += run;
      j += run;
    }
    if (r.fast && r.format->locate_params) r.format->locate_params(main_[0].shape, main_[1].shape, r);
  }

  // Rows [j, j + run) of r are slots [slot, slot + run) of one block.
  void locate_rows(const detail::KvRegion& kreg, const detail::KvRegion& vreg, TileRows& r, int64_t j, int64_t slot,
                   int64_t run) const {
    const std::byte* kc = kreg.codes + slot * kreg.row_bytes;
    const std::byte* vc = vreg.codes + slot * vreg.row_bytes;
    if (!r.fast) {
      // Pointer steps, no products or divisions per key: this runs for every key of a step.
      for (int64_t x = 0; x < run; ++x, kc += kreg.row_bytes, vc += vreg.row_bytes) {
        r.krows[j + x] = kc;
        r.vrows[j + x] = vc;
      }
      return;
    }
    fill_rows_avx512(kc, kreg.row_bytes, run, r.krows + j);
    fill_rows_avx512(vc, vreg.row_bytes, run, r.vrows + j);
    // The run's parameters (int8, int4), for the format's locate_params once the tile is resolved.
    if (r.format->locate_params) r.runs[r.run_count++] = {kreg.params, vreg.params, j, slot, run};
  }

  // NaN and inf in V at keys a row may not see: such a key has P = 0 in that row, and
  // 0 * NaN = NaN in O += P V would poison the row, against the rule that NaN reaches only
  // the rows that see it. So the keys of this tile whose V row is not finite get p v added
  // to the rows that see them here, with a plain loop, and are then read by the kernels as
  // zero rows (the order of the two additions matters only in rows that see such a key,
  // which are not finite anyway), as flash does on its Partial tiles.
  void add_nonfinite_values(TileRows& r) {
    const DecodeFormat& f = r.fast ? *r.format : generic_format();  // as the kernels read the rows
    int64_t bad[kTileKeys];
    const int64_t count = f.nonfinite_values(r, p_.dv, bad);
    float* v = w_.vrow.data();
    for (int64_t x = 0; x < count; ++x) {
      const int64_t j = bad[x];
      f.value_to_f32(r, j, p_.dv, v);
      for (int64_t row = 0; row < p_.rows; ++row) {
        if (w_.bias[static_cast<size_t>(row * kTileKeys + j)] == kNegInf) continue;  // hidden from this row
        const float pj = w_.s[static_cast<size_t>(row * kTileKeys + j)];
        float* acc = w_.acc.data() + row * p_.dv;
        for (int64_t c = 0; c < p_.dv; ++c) acc[c] += pj * v[c];
      }
      zero_value(r, j);
    }
  }

  // Generic path: rows [j0, j0 + run) (slots from `slot`, logical from `i0`) of one run as
  // f32, in place of the stored-row pointers (f32 storage is read where it lies, unless
  // RoPE must rotate a copy).
  void dequantise(const detail::KvRegion& kreg, const detail::KvRegion& vreg, TileRows& r, int64_t j0, int64_t run,
                  int64_t slot, int64_t i0) {
    const bool rotate = cache_.rope() != nullptr;
    const auto to_f32 = r.format->to_f32;  // null: f32 rows
    float* kt = w_.ktile.data() + j0 * p_.dk;
    float* vt = w_.vtile.data() + j0 * p_.dv;
    if (to_f32) {
      to_f32(convert_, kreg, slot, run, kt);
      to_f32(convert_, vreg, slot, run, vt);
    }
    for (int64_t x = 0; x < run; ++x, kt += p_.dk, vt += p_.dv) {
      const int64_t j = j0 + x;
      if (rotate) {
        if (!to_f32) std::memcpy(kt, r.krows[j], static_cast<size_t>(p_.dk) * 4);
        rope_row(*cache_.rope(), kt, p_.dk, cache_.rope_position(s_, i0 + x));
      }
      if (to_f32 || rotate) r.krows[j] = kt;
      if (to_f32) r.vrows[j] = vt;
    }
  }

  const KvCache& cache_;
  const Plan& p_;
  const Kernels& k_;
  const KvSequence& s_;
  detail::KvRegionPlace main_[2], residual_[2];  // [K, V] of this layer and head
  Scratch& w_;
  const QueryRows q_;  // w_'s queries, as the formats' kernels take them
  const RowConverters convert_;
  const DecodeFormat *main_format_, *residual_format_;
  Ahead kahead_, vahead_;
};

// The additive bias of a tile's scores, bias: [rows][kTileKeys]: -inf where a row may not
// see the key, else minus the ALiBi term slope[h] |qi - i| (0 without ALiBi).
void fill_bias(const Plan& p, int64_t held, int64_t kv_head, const Tile& tile, float* bias) {
  for (int64_t r = 0; r < p.rows; ++r) {
    const int64_t t = r % p.nq, qi = held - p.nq + t;
    const double slope = p.alibi.empty() ? 0.0 : p.alibi[static_cast<size_t>(kv_head * p.g + r / p.nq)];
    for (int64_t j = 0; j < tile.hi - tile.lo; ++j) {
      const int64_t i = tile.lo + j;
      bias[r * kTileKeys + j] =
          p.visible(held, i, t) ? static_cast<float>(-slope * static_cast<double>(std::abs(qi - i))) : kNegInf;
    }
  }
}

// One work item: the online softmax over its tiles, leaving normalised rows in `o` and
// their running max and sum in `m`, `l` (o: [rows][dv] f32 with row stride dv).
void run_item(const KvCache& cache, const Plan& p, const Kernels& k, int64_t layer, const TensorView& q,
              const Item& it, Scratch& w, float* o, float* m, float* l) {
  const KvSequence& s = *p.seqs[static_cast<size_t>(it.b)];
  const std::vector<Tile>& tiles = p.tiles[static_cast<size_t>(it.b)];
  std::fill(w.acc.begin(), w.acc.end(), 0.0f);
  std::fill(w.m.begin(), w.m.end(), kNegInf);
  std::fill(w.l.begin(), w.l.end(), 0.0f);
  prepare_queries(cache, p, q, it.b, it.h, TileStep::query_format(k, cache.config().storage), w);
  TileStep step(cache, p, k, layer, it.h, s, w);
  SoftmaxParams prm;
  prm.scale = p.scale;
  prm.softcap = p.softcap;
  for (int64_t t = it.t0; t < it.t1; ++t) {
    const Tile& tile = tiles[static_cast<size_t>(t)];
    step.scores(tile, t + 1 < it.t1 ? &tile + 1 : nullptr);
    const bool partial = !p.full(s.held, tile);
    const float* bias = nullptr;
    if (partial || !p.alibi.empty()) {
      fill_bias(p, s.held, it.h, tile, w.bias.data());
      bias = w.bias.data();
    }
    k.simd.softmax_tile(w.s.data(), p.rows, tile.hi - tile.lo, prm, bias, w.m.data(), w.l.data(), w.alpha.data());
    k.simd.rescale_rows(w.acc.data(), p.rows, p.dv, w.alpha.data());
    step.accumulate(partial);
  }
  for (int64_t r = 0; r < p.rows; ++r) {
    m[r] = w.m[static_cast<size_t>(r)];
    l[r] = w.l[static_cast<size_t>(r)];
    const softmax::Finished f = softmax::finish_row(m[r], l[r]);
    for (int64_t c = 0; c < p.dv; ++c) o[r * p.dv + c] = w.acc[static_cast<size_t>(r * p.dv + c)] * f.inv;
  }
}

}  // namespace
}  // namespace decode

void decode_attention(const KvCache& cache, int64_t layer, std::span<const int64_t> seqs, const TensorView& q,
                      const MutTensorView& out, const DecodeOptions& opts, const MutTensorView& lse) {
  using namespace decode;
  const Plan p = make_plan(cache, layer, seqs, q, out, opts, lse);
  const KvCacheConfig& cfg = cache.config();
  // Chosen per call, not cached: hwy::DisableTargets (the tests' way of running every
  // target) must take effect. Filling the tables costs a few loads.
  Kernels k{simd_ops(), flash::simd_ops(), false};
  k.stored = opts.kernel == DecodeKernel::automatic && stored_kernels_fit(cfg.storage, p.dk, p.dv, cfg.group) &&
             cache.rope() == nullptr;

  // Work items, and the split of each (sequence, KV head) along its keys.
  std::vector<Item> items;
  const int64_t per_seq_chunks = (kMinItems + p.B * p.Hkv - 1) / std::max<int64_t>(1, p.B * p.Hkv);
  std::vector<int64_t> chunks(static_cast<size_t>(p.B));
  for (int64_t b = 0; b < p.B; ++b) {
    const int64_t nt = static_cast<int64_t>(p.tiles[static_cast<size_t>(b)].size());
    const int64_t c = std::clamp<int64_t>(std::min(per_seq_chunks, nt / kMinChunkTiles), 1, std::max<int64_t>(nt, 1));
    chunks[static_cast<size_t>(b)] = c;
    for (int64_t h = 0; h < p.Hkv; ++h)
      for (int64_t i = 0; i < c; ++i)
        items.push_back({b, h, nt * i / c, nt * (i + 1) / c});
  }
  // Each item's normalised rows [rows][dv] and running max and sum [rows], merged below.
  const size_t n_items = items.size();
  std::vector<float> item_o(n_items * static_cast<size_t>(p.rows * p.dv));
  std::vector<float> item_m(n_items * static_cast<size_t>(p.rows)), item_l(item_m.size());

  int64_t total_tiles = 0;
  for (const auto& t : p.tiles) total_tiles += static_cast<int64_t>(t.size());
  const int threads = total_tiles * p.rows >= 64 ? omp_get_max_threads() : 1;
  std::vector<Scratch> scratch;
  scratch.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) scratch.emplace_back(p);

  const auto src_o = [&](size_t i) { return item_o.data() + i * static_cast<size_t>(p.rows * p.dv); };
  const auto src_m = [&](size_t i) { return item_m.data() + i * static_cast<size_t>(p.rows); };
  const auto src_l = [&](size_t i) { return item_l.data() + i * static_cast<size_t>(p.rows); };
  softmax::for_each_item(static_cast<int64_t>(n_items), threads, [&](int64_t i, int thread) {
    const size_t x = static_cast<size_t>(i);
    run_item(cache, p, k, layer, q, items[x], scratch[static_cast<size_t>(thread)], src_o(x), src_m(x), src_l(x));
  });

  // Merge the chunks of each (sequence, KV head) in key order, then write out / lse.
  std::vector<float> o(static_cast<size_t>(p.dv));
  for (size_t i = 0; i < items.size();) {
    const Item& first = items[i];
    const int64_t c = chunks[static_cast<size_t>(first.b)];
    for (int64_t r = 0; r < p.rows; ++r) {
      float row_lse;
      softmax::merge_chunks(
          c, p.dv, [&](int64_t x) { return src_o(i + static_cast<size_t>(x)) + r * p.dv; },
          [&](int64_t x) { return src_m(i + static_cast<size_t>(x))[r]; },
          [&](int64_t x) { return src_l(i + static_cast<size_t>(x))[r]; }, o.data(), row_lse);
      const int64_t hq = first.h * p.g + r / p.nq, t = r % p.nq;
      for (int64_t ch = 0; ch < p.dv; ++ch) out.set(o[static_cast<size_t>(ch)], first.b, hq, t, ch);
      if (lse.rank() != 0) lse.set(row_lse, first.b, hq, t);
    }
    i += static_cast<size_t>(c);
  }
}

}  // namespace attnkit
