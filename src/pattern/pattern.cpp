// Pattern construction and validation, binding to sizes, and everything derived from a
// kind's allow()/keys(): exact classification, block-sparse tile lists and pair counts.
#include "attnkit/pattern.hpp"

#include <algorithm>
#include <cassert>

#include <fmt/format.h>

#include "attnkit/error.hpp"
#include "attnkit/shape.hpp"
#include "pattern/pattern_impl.hpp"

namespace attnkit {

namespace {
void check_length(int64_t v, const char* what) {
  check(v >= 0 && v <= kMaxSeqLen, [&] { return fmt::format("pattern: {} ({}) must be in [0, {}]", what, v, kMaxSeqLen); });
}
}  // namespace

Pattern::Pattern() = default;
Pattern Pattern::none() { return Pattern(); }
Pattern Pattern::causal() { return window(-1, 0); }

Pattern Pattern::window(int64_t left, int64_t right) {
  for (auto [v, name] : {std::pair{left, "window left"}, std::pair{right, "window right"}}) {
    check(v >= -1, [&] { return fmt::format("pattern: {} ({}) must be >= 0, or -1 for unbounded", name, v); });
    if (v >= 0) check_length(v, name);
  }
  Pattern p;
  p.kind_ = left < 0 && right < 0 ? Kind::none : (left < 0 && right == 0 ? Kind::causal : Kind::window);
  p.left_ = left;
  p.right_ = right;
  return p;
}

Pattern Pattern::longformer(LongformerSpec s) {
  check(s.window >= 0, [&] { return fmt::format("pattern: longformer window w ({}) must be >= 0", s.window); });
  check(s.dilation >= 1, [&] { return fmt::format("pattern: longformer dilation d ({}) must be >= 1", s.dilation); });
  check(s.window <= kMaxSeqLen / s.dilation, [&] {
    return fmt::format("pattern: longformer reach w*d ({}*{}) exceeds {}", s.window, s.dilation, kMaxSeqLen);
  });
  for (int64_t g : s.global) check_length(g, "longformer global position");
  std::sort(s.global.begin(), s.global.end());
  s.global.erase(std::unique(s.global.begin(), s.global.end()), s.global.end());
  Pattern p;
  p.kind_ = Kind::longformer;
  p.longformer_ = std::move(s);
  return p;
}

Pattern Pattern::bigbird(BigBirdSpec s) {
  check(s.block >= 1 && s.block <= kMaxSeqLen,
        [&] { return fmt::format("pattern: bigbird block ({}) must be in [1, {}]", s.block, kMaxSeqLen); });
  check(s.window >= 1 && s.window <= kMaxSeqLen,
        [&] { return fmt::format("pattern: bigbird window ({}) must be >= 1 block", s.window); });
  check_length(s.global, "bigbird global blocks");
  check(s.random >= 0 && s.random <= 1 << 20,
        [&] { return fmt::format("pattern: bigbird random ({}) must be in [0, {}]", s.random, 1 << 20); });
  Pattern p;
  p.kind_ = Kind::bigbird;
  p.bigbird_ = s;
  return p;
}

Pattern Pattern::strided(int64_t stride) {
  check(stride >= 1 && stride <= kMaxSeqLen,
        [&] { return fmt::format("pattern: strided stride ({}) must be in [1, {}]", stride, kMaxSeqLen); });
  Pattern p;
  p.kind_ = Kind::strided;
  p.stride_ = stride;
  return p;
}

Pattern Pattern::fixed(int64_t stride, int64_t c) {
  check(stride >= 1 && stride <= kMaxSeqLen,
        [&] { return fmt::format("pattern: fixed stride ({}) must be in [1, {}]", stride, kMaxSeqLen); });
  check(c >= 1 && c <= stride, [&] { return fmt::format("pattern: fixed c ({}) must be in [1, stride={}]", c, stride); });
  Pattern p;
  p.kind_ = Kind::fixed;
  p.stride_ = stride;
  p.summary_ = c;
  return p;
}

Pattern Pattern::block_mask(BlockMaskSpec s) {
  check(s.block_q >= 1 && s.block_k >= 1 && s.block_q <= kMaxSeqLen && s.block_k <= kMaxSeqLen, [&] {
    return fmt::format("pattern: block mask block sizes ({}, {}) must be in [1, {}]", s.block_q, s.block_k, kMaxSeqLen);
  });
  check(s.rows >= 0 && s.cols >= 0 && s.rows <= kMaxSeqLen && s.cols <= kMaxSeqLen &&
            static_cast<int64_t>(s.mask.size()) == s.rows * s.cols,
        [&] {
          return fmt::format("pattern: block mask has {} entries for a {}x{} grid", s.mask.size(), s.rows, s.cols);
        });
  Pattern p;
  p.kind_ = Kind::block_mask;
  p.blocks_ = std::move(s);
  return p;
}

Pattern Pattern::predicate(std::function<bool(int64_t, int64_t)> allow, std::string name) {
  check(static_cast<bool>(allow), [] { return std::string("pattern: predicate is empty"); });
  Pattern p;
  p.kind_ = Kind::predicate;
  p.predicate_ = std::make_shared<const std::function<bool(int64_t, int64_t)>>(std::move(allow));
  p.predicate_name_ = std::move(name);
  return p;
}

bool Pattern::is_causal() const {
  switch (kind_) {
    case Kind::causal:
    case Kind::strided:
    case Kind::fixed: return true;
    case Kind::window: return right_ == 0;
    case Kind::longformer: return longformer_.causal;
    default: return false;
  }
}

BoundPattern Pattern::bind(int64_t q_len, int64_t kv_len) const {
  check_length(q_len, "q_len");
  check_length(kv_len, "kv_len");
  if (kind_ == Kind::longformer && !longformer_.global.empty()) {
    const int64_t last = longformer_.global.back();
    check(last < kv_len, [&] {
      return fmt::format("pattern: longformer global position {} must be < kv_len ({})", last, kv_len);
    });
  }
  if (kind_ == Kind::bigbird) {
    check(q_len <= kv_len, [&] {
      return fmt::format("pattern: bigbird needs q_len ({}) <= kv_len ({}): query blocks are key blocks", q_len, kv_len);
    });
    const int64_t blocks = (kv_len + bigbird_.block - 1) / bigbird_.block;
    check(blocks * std::min(bigbird_.random, blocks) <= int64_t{1} << 27, [&] {
      return fmt::format("pattern: bigbird random={} over {} blocks stores too many random blocks (limit 2^27); use "
                         "fewer random blocks or a larger block",
                         bigbird_.random, blocks);
    });
  }
  if (kind_ == Kind::block_mask) {
    const int64_t rows = (q_len + blocks_.block_q - 1) / blocks_.block_q;
    const int64_t cols = (kv_len + blocks_.block_k - 1) / blocks_.block_k;
    check(rows == blocks_.rows && cols == blocks_.cols, [&] {
      return fmt::format("pattern: block mask grid {}x{} does not cover q_len={} x kv_len={} with blocks {}x{} "
                         "(needs {}x{})", blocks_.rows, blocks_.cols, q_len, kv_len, blocks_.block_q,
                         blocks_.block_k, rows, cols);
    });
  }
  return BoundPattern(*this, q_len, kv_len, make_impl(*this, q_len, kv_len, predicate_.get()));
}

BoundPattern::BoundPattern(Pattern p, int64_t q_len, int64_t kv_len, std::shared_ptr<const PatternImpl> impl)
    : pattern_(std::move(p)), q_len_(q_len), kv_len_(kv_len), impl_(std::move(impl)) {}

bool BoundPattern::allow(int64_t q, int64_t k) const {
  assert(q >= 0 && q < q_len_ && k >= 0 && k < kv_len_);
  return impl_->allow(q, k);
}

void BoundPattern::keys(int64_t q, std::vector<KeyInterval>& out) const {
  assert(q >= 0 && q < q_len_);
  out.clear();
  impl_->append_keys(q, out);
  normalize_intervals(out);
}

int64_t BoundPattern::row_pairs(int64_t q) const {
  if (impl_->is_window()) {
    const auto& w = static_cast<const WindowImpl&>(*impl_);
    const int64_t p = impl_->position(q);
    return std::max<int64_t>(0, w.hi(p) - w.lo(p));
  }
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
  if (impl_->is_window()) return static_cast<const WindowImpl&>(*impl_).classify(q0, q1, k0, k1);
  int64_t allowed = 0;
  std::vector<KeyInterval> iv;
  for (int64_t q = q0; q < q1; ++q) {
    keys(q, iv);
    for (const KeyInterval& i : iv) allowed += std::max<int64_t>(0, std::min(i.end, k1) - std::max(i.begin, k0));
  }
  if (allowed == 0) return TileClass::Empty;
  return allowed == (q1 - q0) * (k1 - k0) ? TileClass::Full : TileClass::Partial;
}

void BoundPattern::tile_row(int64_t q_tile, int64_t block_q, int64_t block_k, std::vector<TileRef>& out) const {
  check(block_q >= 1 && block_k >= 1,
        [&] { return fmt::format("tiles: block sizes ({}, {}) must be >= 1", block_q, block_k); });
  out.clear();
  const int64_t q0 = q_tile * block_q, q1 = std::min(q_len_, q0 + block_q);
  if (q0 >= q1) return;
  auto width = [&](int64_t kt) { return std::min(block_k, kv_len_ - kt * block_k); };

  if (impl_->is_window()) {
    // The rows' key hull is [lo(first row), hi(last row)); classify each tile in it in O(1).
    const auto& w = static_cast<const WindowImpl&>(*impl_);
    const int64_t lo = w.lo(impl_->position(q0)), hi = w.hi(impl_->position(q1 - 1));
    for (int64_t kt = lo / block_k; lo < hi && kt * block_k < hi; ++kt) {
      const TileClass c = w.classify(q0, q1, kt * block_k, kt * block_k + width(kt));
      if (c != TileClass::Empty) out.push_back({kt, c});
    }
    return;
  }

  // Interval kinds: count the allowed pairs each kv tile receives from the rows of the query
  // tile; a tile is Full when it receives rows x width. Cost: rows x (intervals + tiles hit).
  std::vector<int64_t> count(static_cast<size_t>((kv_len_ + block_k - 1) / block_k), 0);
  std::vector<int64_t> touched;
  std::vector<KeyInterval> iv;
  for (int64_t q = q0; q < q1; ++q) {
    keys(q, iv);
    for (const KeyInterval& i : iv)
      for (int64_t kt = i.begin / block_k; kt * block_k < i.end; ++kt) {
        if (count[static_cast<size_t>(kt)] == 0) touched.push_back(kt);
        count[static_cast<size_t>(kt)] += std::min(i.end, (kt + 1) * block_k) - std::max(i.begin, kt * block_k);
      }
  }
  std::sort(touched.begin(), touched.end());
  for (int64_t kt : touched) {
    const bool full = count[static_cast<size_t>(kt)] == (q1 - q0) * width(kt);
    out.push_back({kt, full ? TileClass::Full : TileClass::Partial});
  }
}

TileList BoundPattern::tiles(int64_t block_q, int64_t block_k) const {
  check(block_q >= 1 && block_k >= 1,
        [&] { return fmt::format("tiles: block sizes ({}, {}) must be >= 1", block_q, block_k); });
  TileList t;
  t.block_q = block_q;
  t.block_k = block_k;
  t.q_tiles = (q_len_ + block_q - 1) / block_q;
  t.kv_tiles = (kv_len_ + block_k - 1) / block_k;
  t.offsets.reserve(static_cast<size_t>(t.q_tiles) + 1);
  t.offsets.push_back(0);
  std::vector<TileRef> row;
  for (int64_t qt = 0; qt < t.q_tiles; ++qt) {
    tile_row(qt, block_q, block_k, row);
    t.entries.insert(t.entries.end(), row.begin(), row.end());
    t.offsets.push_back(static_cast<int64_t>(t.entries.size()));
  }
  return t;
}

int64_t TileList::count(TileClass cls) const {
  return std::count_if(entries.begin(), entries.end(), [&](const TileRef& r) { return r.cls == cls; });
}

}  // namespace attnkit
