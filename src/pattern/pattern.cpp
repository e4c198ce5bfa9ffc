// Binding a pattern to sizes, and everything derived from a kind's PatternImpl: exact
// classification, tile rows and columns, block-sparse lists in both orders, pair counts.
// Kind-free: nothing here names a kind; each kind describes itself (pattern_kinds.cpp) and
// the generic defaults below serve every kind that does not know better.
#include "attnkit/pattern.hpp"

#include <algorithm>
#include <cassert>
#include <type_traits>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "pattern/pattern_impl.hpp"

namespace attnkit {

void check_length(int64_t v, const char* what) {
  check(v >= 0 && v <= kMaxSeqLen, [&] { return fmt::format("pattern: {} ({}) must be in [0, {}]", what, v, kMaxSeqLen); });
}

bool Pattern::is_causal() const { return causal_; }

BoundPattern Pattern::bind(int64_t q_len, int64_t kv_len) const {
  check_length(q_len, "q_len");
  check_length(kv_len, "kv_len");
  return BoundPattern(*this, q_len, kv_len, make_impl(*this, q_len, kv_len, predicate_.get()));
}

// ---- generic derivations from a kind's row keys ----

void normalize_intervals(std::vector<KeyInterval>& v) {
  std::sort(v.begin(), v.end(), [](const KeyInterval& a, const KeyInterval& b) { return a.begin < b.begin; });
  size_t n = 0;
  for (const KeyInterval& iv : v) {
    if (iv.begin >= iv.end) continue;
    if (n > 0 && iv.begin <= v[n - 1].end) {
      v[n - 1].end = std::max(v[n - 1].end, iv.end);
    } else {
      v[n++] = iv;
    }
  }
  v.resize(n);
}

void PatternImpl::row_keys(int64_t q, std::vector<KeyInterval>& out) const {
  out.clear();
  append_keys(q, out);
  normalize_intervals(out);
}

TileClass PatternImpl::classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  int64_t allowed = 0;
  std::vector<KeyInterval> iv;
  for (int64_t q = q0; q < q1; ++q) {
    row_keys(q, iv);
    for (const KeyInterval& i : iv) allowed += std::max<int64_t>(0, std::min(i.end, k1) - std::max(i.begin, k0));
  }
  if (allowed == 0) return TileClass::Empty;
  return allowed == (q1 - q0) * (k1 - k0) ? TileClass::Full : TileClass::Partial;
}

// Counts the allowed pairs each kv tile receives from the rows; a tile is Full when it
// receives rows x width.
void PatternImpl::tile_row(int64_t q0, int64_t q1, int64_t block_k, std::vector<TileRef>& out) const {
  std::vector<int64_t> count(static_cast<size_t>((kv_len_ + block_k - 1) / block_k), 0);
  std::vector<int64_t> touched;
  std::vector<KeyInterval> iv;
  for (int64_t q = q0; q < q1; ++q) {
    row_keys(q, iv);
    for (const KeyInterval& i : iv)
      for (int64_t kt = i.begin / block_k; kt * block_k < i.end; ++kt) {
        if (count[static_cast<size_t>(kt)] == 0) touched.push_back(kt);
        count[static_cast<size_t>(kt)] += std::min(i.end, (kt + 1) * block_k) - std::max(i.begin, kt * block_k);
      }
  }
  std::sort(touched.begin(), touched.end());
  for (int64_t kt : touched) {
    const int64_t width = std::min(block_k, kv_len_ - kt * block_k);
    out.push_back({kt, count[static_cast<size_t>(kt)] == (q1 - q0) * width ? TileClass::Full : TileClass::Partial});
  }
}

void PatternImpl::tile_column(int64_t k0, int64_t k1, int64_t block_q, std::vector<QTileRef>& out) const {
  for (int64_t qt = 0; qt * block_q < q_len_; ++qt) {
    const TileClass c = classify(qt * block_q, std::min(q_len_, (qt + 1) * block_q), k0, k1);
    if (c != TileClass::Empty) out.push_back({qt, c});
  }
}

// ---- BoundPattern ----

namespace {

void check_blocks(int64_t block_q, int64_t block_k) {
  check(block_q >= 1 && block_k >= 1,
        [&] { return fmt::format("tiles: block sizes ({}, {}) must be >= 1", block_q, block_k); });
}

int64_t tiles_over(int64_t len, int64_t block) { return (len + block - 1) / block; }

// Row q_tile of the tile grid, or column kv_tile: the index turned into its rows or keys.
void fill_row(const PatternImpl& impl, int64_t q_tile, int64_t block_q, int64_t block_k, std::vector<TileRef>& out) {
  out.clear();
  if (q_tile < 0 || q_tile >= tiles_over(impl.q_len(), block_q) || impl.kv_len() == 0) return;
  impl.tile_row(q_tile * block_q, std::min(impl.q_len(), (q_tile + 1) * block_q), block_k, out);
}

void fill_column(const PatternImpl& impl, int64_t kv_tile, int64_t block_q, int64_t block_k,
                 std::vector<QTileRef>& out) {
  out.clear();
  if (kv_tile < 0 || kv_tile >= tiles_over(impl.kv_len(), block_k) || impl.q_len() == 0) return;
  impl.tile_column(kv_tile * block_k, std::min(impl.kv_len(), (kv_tile + 1) * block_k), block_q, out);
}

template <class List>
List empty_list(int64_t q_len, int64_t kv_len, int64_t block_q, int64_t block_k) {
  List t;
  t.block_q = block_q;
  t.block_k = block_k;
  t.q_tiles = tiles_over(q_len, block_q);
  t.kv_tiles = tiles_over(kv_len, block_k);
  t.offsets.push_back(0);
  return t;
}

}  // namespace

BoundPattern::BoundPattern(Pattern p, int64_t q_len, int64_t kv_len, std::shared_ptr<const PatternImpl> impl)
    : pattern_(std::move(p)), q_len_(q_len), kv_len_(kv_len), impl_(std::move(impl)) {}

bool BoundPattern::allow(int64_t q, int64_t k) const {
  assert(q >= 0 && q < q_len_ && k >= 0 && k < kv_len_);
  return impl_->allow(q, k);
}

void BoundPattern::keys(int64_t q, std::vector<KeyInterval>& out) const {
  assert(q >= 0 && q < q_len_);
  impl_->row_keys(q, out);
}

int64_t BoundPattern::row_pairs(int64_t q) const {
  if (const int64_t n = impl_->count_keys(q); n >= 0) return n;
  std::vector<KeyInterval> iv;
  keys(q, iv);
  int64_t n = 0;
  for (const KeyInterval& i : iv) n += i.size();
  return n;
}

int64_t BoundPattern::visited_pairs() const {
  int64_t n = 0;
  for (int64_t q = 0; q < q_len_; ++q) n += row_pairs(q);
  return n;
}

TileClass BoundPattern::classify(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  q0 = std::max<int64_t>(q0, 0), k0 = std::max<int64_t>(k0, 0);
  q1 = std::min(q1, q_len_), k1 = std::min(k1, kv_len_);
  if (q0 >= q1 || k0 >= k1) return TileClass::Empty;
  return impl_->classify(q0, q1, k0, k1);
}

bool BoundPattern::analytic() const { return impl_->analytic(); }

void BoundPattern::tile_row(int64_t q_tile, int64_t block_q, int64_t block_k, std::vector<TileRef>& out) const {
  check_blocks(block_q, block_k);
  fill_row(*impl_, q_tile, block_q, block_k, out);
}

void BoundPattern::kv_tile_column(int64_t kv_tile, int64_t block_q, int64_t block_k,
                                  std::vector<QTileRef>& out) const {
  check_blocks(block_q, block_k);
  fill_column(*impl_, kv_tile, block_q, block_k, out);
}

TileList BoundPattern::tiles(int64_t block_q, int64_t block_k) const {
  check_blocks(block_q, block_k);
  TileList t = empty_list<TileList>(q_len_, kv_len_, block_q, block_k);
  t.offsets.reserve(static_cast<size_t>(t.q_tiles) + 1);
  std::vector<TileRef> row;
  for (int64_t qt = 0; qt < t.q_tiles; ++qt) {
    fill_row(*impl_, qt, block_q, block_k, row);
    t.entries.insert(t.entries.end(), row.begin(), row.end());
    t.offsets.push_back(static_cast<int64_t>(t.entries.size()));
  }
  return t;
}

KvTileList BoundPattern::tiles_by_kv(int64_t block_q, int64_t block_k) const {
  check_blocks(block_q, block_k);
  KvTileList t = empty_list<KvTileList>(q_len_, kv_len_, block_q, block_k);
  if (impl_->analytic()) {  // column by column, each in O(its tiles)
    t.offsets.reserve(static_cast<size_t>(t.kv_tiles) + 1);
    std::vector<QTileRef> column;
    for (int64_t kt = 0; kt < t.kv_tiles; ++kt) {
      fill_column(*impl_, kt, block_q, block_k, column);
      t.entries.insert(t.entries.end(), column.begin(), column.end());
      t.offsets.push_back(static_cast<int64_t>(t.entries.size()));
    }
    return t;
  }
  // The rows' list transposed: a counting sort by kv tile; walking query tiles in order
  // keeps each column in increasing q_tile order.
  const TileList rows = tiles(block_q, block_k);
  t.offsets.assign(static_cast<size_t>(t.kv_tiles) + 1, 0);
  for (const TileRef& r : rows.entries) ++t.offsets[static_cast<size_t>(r.kv_tile) + 1];
  for (size_t i = 1; i < t.offsets.size(); ++i) t.offsets[i] += t.offsets[i - 1];
  t.entries.resize(rows.entries.size());
  std::vector<int64_t> next(t.offsets.begin(), t.offsets.end() - 1);
  for (int64_t qt = 0; qt < rows.q_tiles; ++qt)
    for (const TileRef& r : rows.row(qt)) {
      int64_t& at = next[static_cast<size_t>(r.kv_tile)];
      t.entries[static_cast<size_t>(at++)] = {qt, r.cls};
    }
  return t;
}

TileRows BoundPattern::tile_rows(int64_t block_q, int64_t block_k) const {
  check_blocks(block_q, block_k);
  TileRows r;
  r.impl_ = impl_;
  r.block_q_ = block_q;
  r.block_k_ = block_k;
  r.lines_ = tiles_over(q_len_, block_q);
  if (!impl_->analytic()) r.list_ = std::make_shared<const TileList>(tiles(block_q, block_k));
  return r;
}

TileColumns BoundPattern::tile_columns(int64_t block_q, int64_t block_k) const {
  check_blocks(block_q, block_k);
  TileColumns c;
  c.impl_ = impl_;
  c.block_q_ = block_q;
  c.block_k_ = block_k;
  c.lines_ = tiles_over(kv_len_, block_k);
  if (!impl_->analytic()) c.list_ = std::make_shared<const KvTileList>(tiles_by_kv(block_q, block_k));
  return c;
}

template <class Ref>
std::span<const Ref> TileLines<Ref>::line(int64_t t, std::vector<Ref>& scratch) const {
  assert(t >= 0 && t < lines_);
  if (list_) return list_->line(t);
  if constexpr (std::is_same_v<Ref, TileRef>) {
    fill_row(*impl_, t, block_q_, block_k_, scratch);
  } else {
    fill_column(*impl_, t, block_q_, block_k_, scratch);
  }
  return scratch;
}

template class TileLines<TileRef>;
template class TileLines<QTileRef>;

}  // namespace attnkit
