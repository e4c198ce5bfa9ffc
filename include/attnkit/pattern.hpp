// attnkit/pattern.hpp — which (query, key) pairs may interact. The one place masking lives.
//
// A Pattern is a size-free description (parsed from a string or built in code). Binding it
// to (q_len, kv_len) gives a BoundPattern, which answers, for row indices q in [0, q_len)
// and k in [0, kv_len):
//   allow(q, k)                   the per-element test, used inside Partial tiles;
//   keys(q)                       the allowed keys of row q as sorted disjoint intervals;
//   classify(q0, q1, k0, k1)      Empty / Partial / Full for any rectangle (exact);
//   tile_rows / tile_columns      the tiles a kernel walks, per query tile (the forward's
//                                 order) or per kv tile (the backward's), without the kernel
//                                 ever naming a kind;
//   tiles / tiles_by_kv           the same as whole block-sparse lists.
// Costs: allow is O(1) (O(log G) for Longformer's G global tokens); classify is O(1) for
// the analytic kinds (none, causal, window, sinks) and O(rows x intervals) otherwise. The
// analytic kinds build a tile row or column on demand in O(its tiles); the others compile
// their lists once in O(rows x intervals). Either way a kernel's work is proportional to
// the tiles the pattern allows.
//
// Positions. Causal alignment is bottom-right: row q sits at absolute position
// p = q + kv_len - q_len, so the last query sees the last key (decoding, chunked prefill).
// All structured patterns (causal, window, sinks, Longformer, BigBird, strided, fixed) use p;
// block masks and user predicates see the raw row index q, as FlexAttention's mask_mod does.
//
// Not for: score modifiers (softcap, ALiBi live in attention.hpp) or KV-cache policies.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit {

enum class TileClass : uint8_t { Empty, Partial, Full };

// Half-open key interval [begin, end).
struct KeyInterval {
  int64_t begin;
  int64_t end;
  int64_t size() const { return end - begin; }
  bool operator==(const KeyInterval&) const = default;
};

// Longformer: a dilated sliding window of `window` keys each side with gap `dilation`
// (keys p + t*dilation, |t| <= window), plus global tokens that see every key and are seen
// by every query. With `causal`, keys after p are dropped everywhere, global rows included.
struct LongformerSpec {
  int64_t window = 0;
  int64_t dilation = 1;
  std::vector<int64_t> global;  // absolute positions; sorted and unique after construction
  bool causal = false;
};

// BigBird (block-sparse, bidirectional): positions grouped in blocks of `block`; block-row
// r sees key blocks r - (window-1)/2 .. r + window/2, the first `global` blocks (which also
// see everything), and `random` further key blocks drawn without replacement from the
// rest, deterministically from (seed, r).
struct BigBirdSpec {
  int64_t block = 64;
  int64_t window = 3;
  int64_t global = 2;
  int64_t random = 3;
  uint64_t seed = 0;
};

// Explicit block mask over (query row index, key index): block (i, j) of size
// block_q x block_k is allowed when mask[i * cols + j] != 0. The grid must cover the
// bound sizes exactly: rows = ceil(q_len / block_q), cols = ceil(kv_len / block_k).
struct BlockMaskSpec {
  int64_t block_q = 1;
  int64_t block_k = 1;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> mask;
};

class BoundPattern;

class Pattern {
 public:
  enum class Kind : uint8_t { none, causal, window, sinks, longformer, bigbird, strided, fixed, block_mask, predicate };

  Pattern();  // none: every key visible
  static Pattern none();
  static Pattern causal();
  // FlashAttention's window_size: row at position p sees keys in [p - left, p + right];
  // -1 means unbounded on that side. window(-1, 0) is causal; window(w, 0) is a causal
  // sliding window of w + 1 keys; window(w, w) is the symmetric |p - k| <= w.
  // sinks > 0 adds StreamingLLM's attention sinks (kind sinks): keys k < sinks are also
  // seen, where k <= p + right (right = -1: always). With right = 0 that is decode's
  // window W with S sinks: window(W - 1, 0, S). A window unbounded on the left already sees
  // every sink, so there the sinks are dropped (the kind stays none / causal / window).
  static Pattern window(int64_t left, int64_t right, int64_t sinks = 0);
  static Pattern longformer(LongformerSpec spec);
  static Pattern bigbird(BigBirdSpec spec);
  // Sparse Transformer (Child et al. 2019), autoregressive like the paper:
  // strided: p - stride < k <= p (local band) or (p - k) % stride == 0 with k <= p.
  static Pattern strided(int64_t stride);
  // fixed: k <= p and (k / stride == p / stride (same block) or k % stride >= stride - c).
  static Pattern fixed(int64_t stride, int64_t c);
  static Pattern block_mask(BlockMaskSpec spec);
  // Any predicate of (row index q, key index k); classify and tiles cost O(q_len x kv_len).
  static Pattern predicate(std::function<bool(int64_t q, int64_t k)> allow, std::string name = "predicate");

  // String syntax (see docs/patterns.md):
  //   none | causal | window:L,R | window:W (= W,W) | window:L,R,sinks=S
  //   longformer:w=64,d=2,global=0+17,causal
  //   bigbird:block=64,window=3,global=2,random=3,seed=7
  //   strided:stride=64 | fixed:stride=64,c=8
  //   blocks:bq=64,bk=64,mask=110/011 (rows of 0/1 separated by '/')
  // Throws Error naming "pattern" and the offending part.
  static Pattern parse(std::string_view text);
  std::string to_string() const;  // canonical; parse(to_string()) describes the same pattern

  Kind kind() const { return kind_; }
  // True when no query sees a key after its own position (what a decoder needs).
  bool is_causal() const;
  // Validates against the sizes (e.g. Longformer globals < kv_len, block-mask grid) and
  // precomputes what the pattern needs (BigBird's random blocks). Throws Error.
  BoundPattern bind(int64_t q_len, int64_t kv_len) const;

  const LongformerSpec& longformer_spec() const { return longformer_; }
  const BigBirdSpec& bigbird_spec() const { return bigbird_; }
  const BlockMaskSpec& block_mask_spec() const { return blocks_; }
  int64_t window_left() const { return left_; }
  int64_t window_right() const { return right_; }
  int64_t sinks() const { return sinks_; }  // 0 unless kind() == sinks
  int64_t stride() const { return stride_; }
  int64_t summary() const { return summary_; }

 private:
  Kind kind_ = Kind::none;
  bool causal_ = false;             // is_causal(), set by the builder
  int64_t left_ = -1, right_ = -1;  // window, sinks
  int64_t sinks_ = 0;               // sinks
  int64_t stride_ = 0, summary_ = 0;  // strided / fixed
  LongformerSpec longformer_;
  BigBirdSpec bigbird_;
  BlockMaskSpec blocks_;
  std::shared_ptr<const std::function<bool(int64_t, int64_t)>> predicate_;
  std::string predicate_name_;
};

// One kv tile a query tile must visit (by-query order), and whether it needs the
// per-element test.
struct TileRef {
  int64_t kv_tile;
  TileClass cls;  // Partial or Full, never Empty
  bool operator==(const TileRef&) const = default;
};

// One query tile that visits a kv tile (by-KV order, the backward's: dK and dV of a kv tile
// gather over the query tiles that see it).
struct QTileRef {
  int64_t q_tile;
  TileClass cls;  // Partial or Full, never Empty
  bool operator==(const QTileRef&) const = default;
};

// Block-sparse tile lists in CSR form: line t is entries[offsets[t] .. offsets[t + 1]).
template <class Ref>
struct TileCsr {
  int64_t block_q = 0, block_k = 0;
  int64_t q_tiles = 0, kv_tiles = 0;
  std::vector<int64_t> offsets;
  std::vector<Ref> entries;

  std::span<const Ref> line(int64_t t) const { return {entries.data() + offsets[t], entries.data() + offsets[t + 1]}; }
  int64_t count(TileClass cls) const {
    int64_t n = 0;
    for (const Ref& r : entries) n += r.cls == cls;
    return n;
  }
};

// By query tile: row t lists the kv tiles of query tile t in increasing kv_tile order.
struct TileList : TileCsr<TileRef> {
  std::span<const TileRef> row(int64_t q_tile) const { return line(q_tile); }
};

// By kv tile: column t lists the query tiles that visit kv tile t in increasing q_tile
// order; the transpose of TileList, entry for entry and class for class.
struct KvTileList : TileCsr<QTileRef> {
  std::span<const QTileRef> column(int64_t kv_tile) const { return line(kv_tile); }
};

// Abstract per-kind implementation; see pattern.cpp and pattern_kinds.cpp.
class PatternImpl;

// What a tiled kernel walks, one line at a time: TileRows (a query tile's kv tiles, the
// forward's order) or TileColumns (a kv tile's query tiles, the backward's). The pattern
// decides how a line comes: analytic kinds build it on demand in O(its tiles), so causal
// holds no list at all; the others compile their whole list once, when the source is made.
// Cheap to copy (a compiled list is shared).
template <class Ref>
class TileLines {
 public:
  TileLines() = default;  // no lines
  int64_t size() const { return lines_; }
  int64_t block_q() const { return block_q_; }
  int64_t block_k() const { return block_k_; }
  bool on_the_fly() const { return list_ == nullptr; }
  // Line t (in [0, size())): built into `scratch` and viewed there, or viewed in the
  // compiled list. Valid until `scratch` changes or the source is destroyed.
  std::span<const Ref> line(int64_t t, std::vector<Ref>& scratch) const;

 private:
  friend class BoundPattern;
  std::shared_ptr<const PatternImpl> impl_;
  std::shared_ptr<const TileCsr<Ref>> list_;  // null: built on the fly
  int64_t block_q_ = 0, block_k_ = 0, lines_ = 0;
};
extern template class TileLines<TileRef>;
extern template class TileLines<QTileRef>;
using TileRows = TileLines<TileRef>;
using TileColumns = TileLines<QTileRef>;

class BoundPattern {
 public:
  int64_t q_len() const { return q_len_; }
  int64_t kv_len() const { return kv_len_; }
  const Pattern& pattern() const { return pattern_; }

  bool allow(int64_t q, int64_t k) const;
  // Allowed keys of row q: sorted, disjoint, non-adjacent, non-empty intervals. Cleared first.
  void keys(int64_t q, std::vector<KeyInterval>& out) const;
  // Exact class of the rectangle rows [q0, q1) x keys [k0, k1), clipped to the bound sizes.
  TileClass classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;

  // True for the analytic kinds, whose tile rows and columns cost O(their tiles); false
  // when a row or column scans the rows' keys (walk a compiled list instead: tile_rows and
  // tile_columns do that by themselves).
  bool analytic() const;
  // What a kernel walks (see TileLines): per query tile of block_q rows, in kv tiles of
  // block_k keys, or per kv tile. Throws Error for block sizes < 1.
  TileRows tile_rows(int64_t block_q, int64_t block_k) const;
  TileColumns tile_columns(int64_t block_q, int64_t block_k) const;

  // Whole lists: per query tile and per kv tile. tiles_by_kv() is tiles() transposed.
  TileList tiles(int64_t block_q, int64_t block_k) const;
  KvTileList tiles_by_kv(int64_t block_q, int64_t block_k) const;
  // One row of tiles(): the non-empty kv tiles of rows [q_tile * block_q, (q_tile + 1) *
  // block_q), in increasing order. One column of tiles_by_kv(): the query tiles that see
  // keys [kv_tile * block_k, (kv_tile + 1) * block_k), in increasing order. Cleared first;
  // O(the tiles listed) for analytic kinds, else O(rows x intervals) for a row and
  // O(q_len x intervals) for a column. An index past the end gives an empty line.
  void tile_row(int64_t q_tile, int64_t block_q, int64_t block_k, std::vector<TileRef>& out) const;
  void kv_tile_column(int64_t kv_tile, int64_t block_q, int64_t block_k, std::vector<QTileRef>& out) const;
  // Number of allowed (q, k) pairs: the work an exact kernel cannot avoid.
  int64_t visited_pairs() const;
  // Allowed pairs in one row.
  int64_t row_pairs(int64_t q) const;

 private:
  friend class Pattern;
  BoundPattern(Pattern p, int64_t q_len, int64_t kv_len, std::shared_ptr<const PatternImpl> impl);
  Pattern pattern_;
  int64_t q_len_ = 0, kv_len_ = 0;
  std::shared_ptr<const PatternImpl> impl_;
};

}  // namespace attnkit
